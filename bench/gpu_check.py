"""Does the gpu image variant find its GPU, and what does the GPU buy? Run it inside the
runtime image: ``bench/gpu_check.sh`` does (read-only, with ``--gpus all`` when the host
has an NVIDIA GPU).

    python bench/gpu_check.py [--quick] [--rows 20000] [--images 2000] [--epochs 5]
                              [--out bench/results]

Checks, on any machine (one failed check fails the run):
  tensorflow-cuda    TensorFlow is a CUDA build
  cuda-libraries     the CUDA 12 runtime, cuBLAS, cuFFT and cuDNN of the nvidia-* wheels load
  jax-cuda           JAX's CUDA 12 plugin is installed (multi-worker training runs on JAX)
  onnxruntime-cuda   ONNX Runtime offers the CUDA execution provider
  trainer-device     ``kerasop train`` says where it trains: "training on N GPU(s)", or
                     "no GPU visible: training on the CPU" (and float32 for mixedPrecision)
  trainer-device-jax the same on Keras' JAX backend (multi-worker jobs run there)
  engine-device      the server's ONNX engine line ends ", on the GPU", or says that this
                     ONNX Runtime has CUDA but sees no GPU
Timings, only where a GPU is visible and without ``--quick``: fit samples/s of
``kerasop train`` (training_throughput.py's dense and CNN cases) on the CPU
(``CUDA_VISIBLE_DEVICES=``) and on the GPU, in float32 and with mixedPrecision; and rows/s
of the ONNX engine at batch 256 on each. Table on stdout, results in
bench/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_throughput import Case, fit_rate, run_child

# Load order matters: each library's dependencies first (RTLD_GLOBAL makes them visible).
CUDA_LIBRARIES = [
    "nvidia/cuda_runtime/lib/libcudart.so.12",
    "nvidia/cublas/lib/libcublasLt.so.12",
    "nvidia/cublas/lib/libcublas.so.12",
    "nvidia/cufft/lib/libcufft.so.11",
    "nvidia/cudnn/lib/libcudnn.so.9",
]
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def check_cuda_libraries() -> str:
    site = next(
        (p for p in sys.path if p.endswith("site-packages") and Path(p, "nvidia").is_dir()), ""
    )
    if not site:
        raise RuntimeError("no nvidia/ folder (the CUDA wheels) in site-packages")
    for rel in CUDA_LIBRARIES:
        matches = glob.glob(os.path.join(site, rel + "*"))
        if not matches:
            raise RuntimeError(f"{rel} is not in {site}")
        ctypes.CDLL(sorted(matches)[0], mode=ctypes.RTLD_GLOBAL)
    return ", ".join(Path(r).name for r in CUDA_LIBRARIES)


def check_tensorflow() -> str:
    import tensorflow as tf

    if not tf.test.is_built_with_cuda():
        raise RuntimeError(f"TensorFlow {tf.__version__} is not a CUDA build")
    info = tf.sysconfig.get_build_info()
    return (
        f"TensorFlow {tf.__version__}, CUDA {info['cuda_version']}, cuDNN {info['cudnn_version']}"
    )


def check_jax() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"jax {version('jax')}, jax-cuda12-plugin {version('jax-cuda12-plugin')}"
    except PackageNotFoundError as exc:
        raise RuntimeError(f"{exc.name} is not installed") from exc


def check_onnxruntime() -> str:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise RuntimeError(f"onnxruntime {ort.__version__} offers {providers}")
    return f"onnxruntime {ort.__version__}: {', '.join(providers)}"


def visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def train(
    case: Case, out: Path, env: dict[str, str], mixed: bool, backend: str = "tensorflow"
) -> dict[str, Any]:
    """One ``kerasop train`` of the case; its device line and fit rate."""
    job = yaml.safe_load(case.job.read_text())
    job["spec"]["training"].update(mixedPrecision=mixed, backend=backend)
    case.job.write_text(yaml.safe_dump(job))
    result = run_child(case.argv("kerasop", out), env, timeout=3600)
    notes = [
        line.split("note: ", 1)[1]
        for line in result.pop("stderr_tail").splitlines()
        if "kerasop-train: note: " in line
    ]
    return {
        "fit_samples_per_s": fit_rate(result, case.train_rows),
        "wall_s": result["wall_s"],
        "device": next((n for n in notes if "GPU" in n and "mixedPrecision" not in n), None),
        "notes": notes,
    }


def engine_rate(version_dir: Path, env: dict[str, str], batch: int) -> dict[str, Any]:
    """The ONNX engine in a child (so CUDA_VISIBLE_DEVICES applies): its line and rows/s."""
    out = subprocess.run(
        [sys.executable, __file__, "--engine-rate", str(version_dir), "--batch", str(batch)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure_engine(version_dir: str, batch: int) -> None:
    from kerasop_server.engines import load_engine

    engine = load_engine("onnx", version_dir)
    shape = tuple(1 if d is None else d for d in engine.input_shape)
    x = np.random.default_rng(0).uniform(0, 1, size=(batch, *shape)).astype(engine.input_dtype)
    for _ in range(5):
        engine.predict(x)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3:
        engine.predict(x)
        calls += 1
    rate = calls * batch / (time.perf_counter() - start)
    print(json.dumps({"detail": engine.detail, "rows_per_s": rate}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the checks only, on tiny data")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--images", type=int, default=2_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--engine-rate", metavar="VERSION_DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.engine_rate:
        measure_engine(args.engine_rate, args.batch)
        return 0

    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, probe: Any) -> Any:
        try:
            checks[name] = {"ok": True, "detail": probe()}
        except Exception as exc:
            checks[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        print(f"{'ok  ' if checks[name]['ok'] else 'FAIL'} {name:17} {checks[name]['detail']}")
        return checks[name]["detail"]

    check("tensorflow-cuda", check_tensorflow)
    check("cuda-libraries", check_cuda_libraries)
    check("jax-cuda", check_jax)
    check("onnxruntime-cuda", check_onnxruntime)
    gpus = visible_gpus()
    print(f"GPUs visible to TensorFlow: {gpus}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    timings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kerasop-gpu-check-") as tmp:
        small = Case("csv", Path(tmp) / "smoke", 200, 2)
        out = Path(tmp) / "store"
        expect = f"training on {gpus} GPU(s)" if gpus else "no GPU visible: training on the CPU"

        def trainer_line(backend: str) -> str:
            run = train(small, out, env, mixed=True, backend=backend)
            if not run["device"] or not run["device"].startswith(expect):
                raise RuntimeError(f"expected {expect!r}, the trainer said {run['notes']}")
            return "; ".join(run["notes"])

        def engine_line() -> str:
            line = engine_rate(out / "bench-csv" / "1", env, batch=8)["detail"]
            want = ", on the GPU" if gpus else "has CUDA but sees no GPU"
            if want not in line:
                raise RuntimeError(f"expected {want!r} in {line!r}")
            return str(line)

        check("trainer-device", lambda: trainer_line("tensorflow"))
        check("trainer-device-jax", lambda: trainer_line("jax"))
        check("engine-device", engine_line)
        if gpus and not args.quick:
            timings = time_cases(args, Path(tmp), env)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "gpus": gpus,
        "gpu_name": gpu_name(),
        "argv": sys.argv[1:],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "gpu_check.json"
    target.write_text(json.dumps({"meta": meta, "checks": checks, "timings": timings}, indent=1))
    print(f"\nwrote {target}")
    failed = [name for name, c in checks.items() if not c["ok"]]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError:
        return None
    return out.stdout.strip() or None


def time_cases(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cases = [("csv", "dense", args.rows), ("images", "cnn", args.images)]
    print(f"\n{'case':6} {'device':5} {'precision':9} {'fit samples/s':>14} {'engine rows/s':>14}")
    for name, label, size in cases:
        case = Case(name, tmp / label, size, args.epochs)
        # mixedPrecision on the CPU trains in float32 (the trainer says so): not a row
        for device, extra, precisions in (("cpu", NO_GPU, [False]), ("gpu", {}, [False, True])):
            run_env = {**env, **extra}
            for mixed in precisions:
                out = tmp / f"{label}-{device}-{mixed}"
                run = train(case, out, run_env, mixed)
                version = out / f"bench-{name}" / "1"
                engine = engine_rate(version, run_env, args.batch) if not mixed else None
                row = {"case": label, "device": device, "mixed": mixed, **run, "engine": engine}
                rows.append(row)
                rate = engine["rows_per_s"] if engine else None
                print(
                    f"{label:6} {device:5} {'mixed' if mixed else 'float32':9} "
                    f"{run['fit_samples_per_s'] or float('nan'):14.0f} "
                    f"{'' if rate is None else f'{rate:14.0f}'}",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    sys.exit(main())
