"""``kerasop train`` against a plain Keras script on the same data, in one run.

    python bench/training_throughput.py [--quick] [--cases csv,images] [--rows 20000]
                                        [--images 2000] [--epochs 5] [--repeats 3]
                                        [--growth 4] [--out bench/results]

Cases (the data is generated under a temporary folder):
  csv     the article's dense model (784 -> Dense(10, relu) -> Dense(1, sigmoid), adam,
          binary_crossentropy, batch 32, validationSplit 0.2) on a ``--rows`` x 784 CSV of
          integer pixels 0..255 (20,000 rows: ~56 MB).
  images  a small CNN (Rescaling, Conv2D 16, MaxPooling, Conv2D 32, GlobalAveragePooling,
          Dense 2 softmax) on an image folder of ``--images`` 64x64 RGB PNGs in two classes.

Runners, each run a separate process (peak RSS is that process's ru_maxrss):
  kerasop  ``kerasop train -f job.yaml`` (local mode, as the README shows), publishing
           the version as a user's job does by default (model.keras, model.onnx,
           metadata.json; checkpoints every 60 s and after the last epoch).
  script   what a user writes instead: ``np.loadtxt`` as float32 (csv) or
           ``keras.utils.image_dataset_from_directory`` (images), a ``Normalization``
           layer adapted on the features (csv; the trainer standardizes too), the same
           model, optimizer, batch size and validation split, ``model.fit``, then
           ``model.save`` of model.keras. No export. TensorFlow is imported with JAX
           hidden, as the trainer does, so both pay for one XLA runtime.
Runs are interleaved (kerasop, script, kerasop, ...) ``--repeats`` times; the table shows
medians. Fit samples/s: training rows x (epochs - 1) / time between the first and last
epoch line on the child's stdout (the first epoch also traces the graph), read the same
way for both runners; "exit after last epoch" is the wall time from the last epoch line to the
child's exit (publishing, saving, interpreter shutdown). ``--growth 4`` adds one run of each runner with 4x the data, for
the peak RSS at that size.

Results: a table on stdout, bench/results/training_throughput.json and .png
(``--quick``: training_throughput_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KERASOP = [str(Path(sys.executable).parent / "kerasop")]
IMAGE_SIZE = 64

CSV_JOB = """\
apiVersion: kerasop.io/v1alpha1
kind: KerasTrainingJob
metadata: {{name: bench-csv}}
spec:
  data: {{format: csv, path: {path}, labelColumn: label, validationSplit: 0.2}}
  model:
    layers:
      - {{type: Dense, units: 10, activation: relu}}
      - {{type: Dense, units: 1, activation: sigmoid}}
  training: {{optimizer: adam, loss: binary_crossentropy, metrics: [accuracy],
             epochs: {epochs}, batchSize: 32, seed: 42}}
"""

IMAGE_JOB = """\
apiVersion: kerasop.io/v1alpha1
kind: KerasTrainingJob
metadata: {{name: bench-images}}
spec:
  data:
    format: imageFolder
    path: {path}
    validationSplit: 0.2
    image: {{height: {size}, width: {size}, channels: 3}}
  model:
    layers:
      - {{type: Rescaling, scale: 0.00392156862745098}}
      - {{type: Conv2D, filters: 16, kernelSize: 3, activation: relu}}
      - {{type: MaxPooling2D}}
      - {{type: Conv2D, filters: 32, kernelSize: 3, activation: relu}}
      - {{type: GlobalAveragePooling2D}}
      - {{type: Dense, units: 2, activation: softmax}}
  training: {{optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy],
             epochs: {epochs}, batchSize: 32, seed: 42}}
"""

# The plain script: what a user writes without the operator (argv: data path, epochs, out).
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    # Equal terms with the trainer (distributed.import_tensorflow_without_jax): TensorFlow
    # imported with JAX hidden, so neither process carries JAX's ~100 MB.
    sys.modules["jax"] = None
    import tensorflow
    del sys.modules["jax"]
    import keras

    case, path, epochs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    keras.utils.set_random_seed(42)

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {epoch + 1}/{epochs}", flush=True)

    if case == "csv":
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
        norm = keras.layers.Normalization()
        norm.adapt(x)
        model = keras.Sequential([
            keras.Input((x.shape[1],)), norm,
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.2, verbose=0,
                  callbacks=[EpochLines()])
    else:
        size = int(sys.argv[5])
        common = dict(image_size=(size, size), batch_size=32, validation_split=0.2, seed=42)
        train = keras.utils.image_dataset_from_directory(path, subset="training", **common)
        val = keras.utils.image_dataset_from_directory(path, subset="validation", **common)
        model = keras.Sequential([
            keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=[EpochLines()])
    model.save(out + "/model.keras")
    """
)


# --------------------------------------------------------------------------- data


def write_csv(path: Path, rows: int) -> None:
    """``rows`` x 784 integer pixels and a 0/1 label that depends on them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        fh.write(",".join([f"p{i}" for i in range(784)] + ["label"]) + "\n")
        for start in range(0, rows, 2000):
            x = rng.integers(0, 256, size=(min(2000, rows - start), 784))
            y = (x[:, :392].mean(axis=1) > x[:, 392:].mean(axis=1)).astype(int)
            np.savetxt(fh, np.column_stack([x, y]), fmt="%d", delimiter=",")


def write_images(folder: Path, count: int) -> None:
    """``count`` PNGs in two classes: bright squares on noise, or dark ones."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 2
        pixels = rng.integers(0, 120, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        a, b = rng.integers(0, IMAGE_SIZE // 2, size=2)
        pixels[a : a + 24, b : b + 24] = 230 if label else 10
        target = folder / f"class{label}" / f"{i:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target)


# --------------------------------------------------------------------------- runs


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run one child; its wall time, peak RSS and the times its epoch lines appeared."""
    start = time.monotonic()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=REPO
    )
    assert child.stdout is not None and child.stderr is not None
    epoch_times: list[float] = []
    lines: list[str] = []
    for line in child.stdout:
        lines.append(line.rstrip())
        if line.startswith("epoch "):
            epoch_times.append(time.monotonic() - start)
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0 or wall > timeout:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({child.returncode}):\n"
            + "\n".join(lines[-20:])
            + err[-3000:]
        )
    return {
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "epoch_at_s": epoch_times,
        "after_last_epoch_s": wall - epoch_times[-1] if epoch_times else None,
        "stderr_tail": err[-4000:],
    }


def fit_rate(run: dict[str, Any], train_rows: int) -> float | None:
    """Training rows per second between the first and the last epoch line."""
    at = run["epoch_at_s"]
    if len(at) < 2:
        return None
    return train_rows * (len(at) - 1) / (at[-1] - at[0])


class Case:
    """One data set, written once, and the two ways to train on it."""

    def __init__(self, name: str, root: Path, size: int, epochs: int) -> None:
        self.name, self.root, self.size, self.epochs = name, root, size, epochs
        data = root / "data"
        if name == "csv":
            self.rel = "table/train.csv"
            write_csv(data / self.rel, size)
            job = CSV_JOB.format(path=self.rel, epochs=epochs)
        else:
            self.rel = "images"
            write_images(data / self.rel, size)
            job = IMAGE_JOB.format(path=self.rel, epochs=epochs, size=IMAGE_SIZE)
        self.job = root / "job.yaml"
        self.job.write_text(job)
        self.script = root / "script.py"
        self.script.write_text(SCRIPT)
        self.train_rows = size - round(size * 0.2)

    def argv(self, runner: str, out: Path) -> list[str]:
        data = self.root / "data"
        if runner == "kerasop":
            return [
                *KERASOP, "train", "-f", str(self.job), "--data-dir", str(data),
                "--store", str(out),
            ]  # fmt: skip
        return [
            sys.executable, str(self.script), self.name, str(data / self.rel), str(self.epochs),
            str(out), str(IMAGE_SIZE),
        ]  # fmt: skip

    def run(self, runner: str, env: dict[str, str]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="kerasop-bench-out-") as out:
            result = run_child(self.argv(runner, Path(out)), env, timeout=3600)
        del result["stderr_tail"]  # for callers that read the trainer's notes (gpu_check.py)
        result["fit_samples_per_s"] = fit_rate(result, self.train_rows)
        return result


def bench_case(
    name: str, size: int, args: argparse.Namespace, env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    print(f"\n{name}: writing {size} {'rows' if name == 'csv' else 'images'}", flush=True)
    case = Case(name, tmp / name, size, args.epochs)
    runs: dict[str, list[dict[str, Any]]] = {"kerasop": [], "script": []}
    for repeat in range(args.repeats):
        for runner in runs:
            result = case.run(runner, env)
            runs[runner].append(result)
            print(
                f"  {runner:8} run {repeat + 1}: {result['wall_s']:.1f} s, "
                f"{result['peak_rss_mb']:.0f} MB, first epoch line at "
                f"{result['epoch_at_s'][0] if result['epoch_at_s'] else float('nan'):.1f} s, "
                f"exit {result['after_last_epoch_s'] or float('nan'):.1f} s after the last",
                flush=True,
            )
    summary = {runner: summarize(results) for runner, results in runs.items()}
    out: dict[str, Any] = {"case": name, "size": size, "runs": runs, "median": summary}
    if args.growth > 1:
        big = Case(name, tmp / f"{name}-x{args.growth}", size * args.growth, args.epochs)
        out["growth"] = {"factor": args.growth, "size": big.size}
        for runner in runs:
            result = big.run(runner, env)
            out["growth"][runner] = result
            print(f"  {runner:8} x{args.growth} data: {result['peak_rss_mb']:.0f} MB", flush=True)
    return out


def summarize(results: list[dict[str, Any]]) -> dict[str, float | None]:
    def median(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return statistics.median(values) if values else None

    first = [r["epoch_at_s"][0] for r in results if r["epoch_at_s"]]
    return {
        "wall_s": median("wall_s"),
        "peak_rss_mb": median("peak_rss_mb"),
        "fit_samples_per_s": median("fit_samples_per_s"),
        "first_epoch_at_s": statistics.median(first) if first else None,
        "after_last_epoch_s": median("after_last_epoch_s"),
    }


# --------------------------------------------------------------------------- output


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "\n| case | runner | wall s | peak RSS MB | fit samples/s | first epoch at s "
        "| exit after last epoch s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")

    def number(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    for case in results:
        for runner, m in case["median"].items():
            print(
                f"| {case['case']} ({case['size']}) | {runner} | {m['wall_s']:.1f} | "
                f"{m['peak_rss_mb']:.0f} | {number(m['fit_samples_per_s'], '.0f')} | "
                f"{number(m['first_epoch_at_s'], '.1f')} | "
                f"{number(m.get('after_last_epoch_s'), '.1f')} |"
            )
    print("\nkerasop against the script (goals: wall <= 1.1x, RSS <= 1.2x, fit >= 0.95x):")
    for case in results:
        k, s = case["median"]["kerasop"], case["median"]["script"]
        line = (
            f"  {case['case']}: wall {ratio(k['wall_s'], s['wall_s'])}, "
            f"peak RSS {ratio(k['peak_rss_mb'], s['peak_rss_mb'])}, "
            f"fit samples/s {ratio(k['fit_samples_per_s'], s['fit_samples_per_s'])}"
        )
        growth = case.get("growth")
        if growth:
            line += (
                f"; peak RSS at {growth['factor']}x data: kerasop "
                f"{ratio(growth['kerasop']['peak_rss_mb'], k['peak_rss_mb'])}, script "
                f"{ratio(growth['script']['peak_rss_mb'], s['peak_rss_mb'])}"
            )
        print(line)


def plot(results: list[dict[str, Any]], target: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    metrics = [
        ("wall_s", "wall s"),
        ("peak_rss_mb", "peak RSS MB"),
        ("fit_samples_per_s", "fit rows/s"),
    ]
    fig, axes = plt.subplots(
        len(results), len(metrics), figsize=(12, 3.2 * len(results)), squeeze=False
    )
    for i, case in enumerate(results):
        for j, (key, label) in enumerate(metrics):
            ax = axes[i][j]
            runners = list(case["median"])
            values = [case["median"][r][key] or 0 for r in runners]
            ax.bar(runners, values, color=["tab:blue", "tab:gray"])
            ax.set_title(f"{case['case']} ({case['size']}): {label}")
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--cases", default="csv,images")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--images", type=int, default=2_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--growth", type=int, default=4, help="one more run with this much data (1: off)"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.images, args.epochs, args.repeats = 200, 40, 2, 1
        args.growth = min(args.growth, 2)
    sizes = {"csv": args.rows, "images": args.images}
    # The caller's PYTHONPATH first (a checkout's trainer/ over an installed one), then REPO.
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(REPO)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(path)}
    with tempfile.TemporaryDirectory(prefix="kerasop-bench-train-") as tmp:
        results = [
            bench_case(name, sizes[name], args, env, Path(tmp)) for name in args.cases.split(",")
        ]
    print_table(results)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "argv": sys.argv[1:],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "training_throughput_quick" if args.quick else "training_throughput"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "cases": results}, indent=1))
    plotted = plot(results, args.out / f"{stem}.png")
    print(f"\nwrote {args.out / (stem + '.json')}" + (f" and {stem}.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
