"""Inference engines compared on this machine: Keras/TF (the baseline) vs ONNX Runtime.

    python bench/serving_engines.py [--seconds 1.0] [--rounds 3] [--threads 0]

Two models (random weights; speed does not depend on training):
  dense  784 -> Dense(10, relu) -> Dense(1, sigmoid)       (the article's network)
  cnn    64x64x3 -> Rescaling -> 3 x (Conv2D 3x3 + pool) -> Dense(3, softmax)
each at batch 1 and 32, through:
  keras.predict_on_batch   baseline: what a plain Keras server would call
  keras tf.function        the server's --engine keras (one batch-polymorphic tf.function)
  savedmodel serve         the SavedModel's serve endpoint (what TF Serving would run)
  onnxruntime              the server's --engine onnx / auto (graph converted by model.export)

TensorFlow and ONNX Runtime get the same intra-op thread count (--threads,
default all CPUs). Engines are measured in interleaved rounds (machine noise hits all of them
alike); the table shows the median round. "x base" is throughput relative to
predict_on_batch in the same run; "max |diff|" compares outputs with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

import numpy as np


def build(kind: str):
    import keras

    keras.utils.set_random_seed(0)
    if kind == "dense":
        layers = [
            keras.Input((784,)),
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    else:
        layers = [
            keras.Input((64, 64, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    return keras.Sequential(layers)


def engines(
    kind: str, workdir: Path, threads: int
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import keras
    import tensorflow as tf

    from kerasop_server.engines import load_engine

    model = build(kind)
    vdir = workdir / kind
    vdir.mkdir()
    model.export(str(vdir), format="tf_saved_model", verbose=False)
    model.save(vdir / "model.keras")
    baseline = keras.saving.load_model(vdir / "model.keras", compile=False)
    saved = tf.saved_model.load(str(vdir))  # keep the object: its variables die with it
    keras_engine = load_engine("keras", vdir, threads=threads)
    t = time.perf_counter()
    onnx_engine = load_engine("onnx", vdir, threads=threads)
    print(
        f"  {kind}: ONNX conversion + session + check: {time.perf_counter() - t:.2f} s"
        f" ({onnx_engine.detail})"
    )
    return {
        "keras.predict_on_batch": lambda x: np.asarray(baseline.predict_on_batch(x)),
        "keras tf.function": keras_engine.predict,
        "savedmodel serve": lambda x: saved.serve(x).numpy(),
        "onnxruntime": onnx_engine.predict,
    }


def measure(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, seconds: float) -> float:
    """Seconds per call (mean over as many calls as fit in ``seconds``)."""
    fn(x)
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="per engine per round (max 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (max 10)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads of TensorFlow and ONNX Runtime alike (default: all CPUs)",
    )
    p.add_argument("--models", default="dense,cnn")
    p.add_argument("--batches", default="1,32")
    args = p.parse_args(argv)
    seconds, rounds = min(args.seconds, 10.0), max(1, min(args.rounds, 10))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # before any TF op runs
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import onnxruntime

    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__},"
        f" ONNX Runtime {onnxruntime.__version__}, {os.cpu_count()} CPUs,"
        f" {args.threads} intra-op threads, load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="kerasop-bench-") as tmp:
        for kind in args.models.split(","):
            fns = engines(kind, Path(tmp), args.threads)
            shape = (784,) if kind == "dense" else (64, 64, 3)
            for batch in (int(b) for b in args.batches.split(",")):
                x = np.random.default_rng(1).uniform(0, 255, size=(batch, *shape)).astype("float32")
                base_out = fns["keras.predict_on_batch"](x)
                times: dict[str, list[float]] = {name: [] for name in fns}
                for _ in range(rounds):
                    for name, fn in fns.items():
                        times[name].append(measure(fn, x, seconds))
                base = statistics.median(times["keras.predict_on_batch"])
                for name, fn in fns.items():
                    t = statistics.median(times[name])
                    diff = float(np.max(np.abs(fn(x) - base_out)))
                    rows.append((kind, batch, name, t * 1000, batch / t, base / t, diff))
    print()
    print("| model | batch | engine | ms / call | rows / s | x base | max abs diff |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for kind, batch, name, ms, rps, speed, diff in rows:
        print(f"| {kind} | {batch} | {name} | {ms:.3f} | {rps:,.0f} | {speed:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
