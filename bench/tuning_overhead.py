"""A search's overhead: the same keras-tuner search run in one process, by kerasop, and as pods.

    python bench/tuning_overhead.py [--trials 6] [--epochs 3] [--rows 2000] [--parallelism 2]
                                    [--cluster] [--namespace NS] [--out bench/results] [--quick]

The dense example (784 features -> Dense(units, relu) -> Dense(1, sigmoid)) searched over
the learning rate and the width, random search, the same seed, ``--trials`` trials:

- ``keras-tuner``: ``keras_tuner.RandomSearch`` in one Python process on the CSV loaded with
  numpy (what a user writes without the operator);
- ``kerasop``: ``kerasop train -f`` on the job with ``spec.tuning`` (one process, the trials
  one after the other, the best one published);
- ``processes``: ``kerasop train -f --processes N``, keras-tuner's distributed mode as the
  operator runs it, each pod a ``kerasop-train`` process here (``--parallelism`` of them, the
  first the chief, which runs trials too): what the pods cost besides their start
  (scheduling, image, volume) on one machine;
- ``cluster`` (``--cluster``): the job applied to the cluster of ``$KUBECONFIG`` (an operator
  installed, a ``training-data`` PVC holding ``dense/train.csv``, as in the e2e suite);
  wall time from the job's creation to its ``completionTime``.

Every mode's wall time includes starting Python and TensorFlow. Results: a table on stdout
(each mode against ``keras-tuner``), bench/results/tuning_overhead.json (``--quick``: 2
trials of 1 epoch on 200 rows, tuning_overhead_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LEARNING_RATES = [0.0003, 0.001, 0.003, 0.01, 0.03]
UNITS = [4, 8, 16, 32]
SEED = 7

PLAIN = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import keras_tuner as kt

    path, trials, epochs, directory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype="float32")
    x, y = table[:, :-1], table[:, -1:]

    def build(hp):
        norm = keras.layers.Normalization()
        norm.adapt(x)
        model = keras.Sequential([
            keras.Input((x.shape[1],)), norm,
            keras.layers.Dense(hp.Choice("model.layers[0].units", UNITS), activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        lr = hp.Choice("training.learningRate", LEARNING_RATES)
        model.compile(keras.optimizers.Adam(lr), loss="binary_crossentropy",
                      metrics=["accuracy"])
        return model

    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=trials, seed=SEED,
                            directory=directory, project_name="plain")
    tuner.search(x, y, epochs=epochs, batch_size=32, validation_split=0.2, verbose=0)
    best = tuner.oracle.get_best_trials(1)[0]
    print("best", best.trial_id, best.hyperparameters.values, best.score)
    """
)


def job_document(trials: int, epochs: int, parallelism: int, claim: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"format": "csv", "path": "dense/train.csv", "validationSplit": 0.2}
    if claim:
        data["volume"] = {"claimName": "training-data"}
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "metadata": {"name": "bench-tuning"},
        "spec": {
            "data": data,
            "model": {
                "layers": [
                    {"type": "Dense", "units": 10, "activation": "relu"},
                    {"type": "Dense", "units": 1, "activation": "sigmoid"},
                ]
            },
            "training": {"metrics": ["accuracy"], "epochs": epochs, "batchSize": 32, "seed": 42},
            "tuning": {
                "space": {
                    "model.layers[0].units": {"choice": UNITS},
                    "training.learningRate": {"choice": LEARNING_RATES},
                },
                "algorithm": "random",
                "maxTrials": trials,
                "parallelism": parallelism,
                "seed": SEED,
            },
            "output": {"formats": [], "storage": {"size": "1Gi"}},
        },
    }


def _env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def run_plain(work: Path, trials: int, epochs: int) -> float:
    script = work / "plain.py"
    script.write_text(
        f"UNITS = {UNITS}\nLEARNING_RATES = {LEARNING_RATES}\nSEED = {SEED}\n" + PLAIN
    )
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(script), str(work / "data" / "dense" / "train.csv"), str(trials),
         str(epochs), str(work / "kt")],
        check=True, capture_output=True, env=_env(),
    )  # fmt: skip
    return time.perf_counter() - t0


def run_kerasop(work: Path, doc: dict[str, Any]) -> float:
    spec = work / "job.yaml"
    spec.write_text(yaml.safe_dump(doc))
    t0 = time.perf_counter()
    subprocess.run(
        [str(BIN / "kerasop"), "train", "-f", str(spec), "--data-dir", str(work / "data"),
         "--store", str(work / "models-local")],
        check=True, capture_output=True, env=_env(),
    )  # fmt: skip
    return time.perf_counter() - t0


def run_processes(work: Path, doc: dict[str, Any], parallelism: int) -> float:
    """``kerasop train -f --processes N``: N processes, the first the chief."""
    spec = work / "job-spread.yaml"
    spec.write_text(yaml.safe_dump(doc))
    t0 = time.perf_counter()
    subprocess.run(
        [str(BIN / "kerasop"), "train", "-f", str(spec), "--data-dir", str(work / "data"),
         "--store", str(work / "models-procs"), "--processes", str(parallelism)],
        check=True, capture_output=True, env=_env(),
    )  # fmt: skip
    return time.perf_counter() - t0


def run_cluster(doc: dict[str, Any], namespace: str) -> float:
    def kubectl(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["kubectl", "-n", namespace, *args], input=stdin, check=True, text=True,
            capture_output=True,
        ).stdout  # fmt: skip

    kubectl("delete", "ktj", "bench-tuning", "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        obj = json.loads(kubectl("get", "ktj", "bench-tuning", "-o", "json"))
        status = obj.get("status") or {}
        if status.get("phase") == "Failed":
            raise SystemExit(f"the search failed: {status.get('failure')}")
        if status.get("phase") == "Succeeded" and status.get("completionTime"):
            created = _rfc3339(obj["metadata"]["creationTimestamp"])
            return _rfc3339(status["completionTime"]) - created
        time.sleep(2)
    raise SystemExit("the search did not finish within an hour")


def _rfc3339(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--cluster", action="store_true", help="also run it on $KUBECONFIG's cluster")
    p.add_argument("--namespace", default="default")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--quick", action="store_true", help="2 trials of 1 epoch on 200 rows")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.rows = 2, 1, 200

    from kerasop_trainer import sample_data

    with tempfile.TemporaryDirectory(prefix="kerasop-tuning-bench-") as tmp:
        work = Path(tmp)
        sample_data.write_dense_csv(work / "data" / "dense" / "train.csv", rows=args.rows)
        local = job_document(args.trials, args.epochs, 1, claim=False)
        spread = job_document(args.trials, args.epochs, args.parallelism, claim=False)
        walls = {
            "keras-tuner": run_plain(work, args.trials, args.epochs),
            "kerasop": run_kerasop(work, local),
            f"{args.parallelism} processes": run_processes(work, spread, args.parallelism),
        }
        if args.cluster:
            on_cluster = job_document(args.trials, args.epochs, args.parallelism, claim=True)
            walls[f"{args.parallelism} pods on the cluster"] = run_cluster(
                on_cluster, args.namespace
            )

    base = walls["keras-tuner"]
    print(f"{args.trials} trials of {args.epochs} epochs, {args.rows} rows, dense example")
    print(f"{'mode':<28} {'wall s':>8} {'x keras-tuner':>14}")
    for mode, wall in walls.items():
        print(f"{mode:<28} {wall:>8.1f} {wall / base:>14.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "tuning_overhead_quick.json" if args.quick else "tuning_overhead.json"
    result = {
        "trials": args.trials,
        "epochs": args.epochs,
        "rows": args.rows,
        "parallelism": args.parallelism,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wall_s": walls,
        "ratio": {mode: wall / base for mode, wall in walls.items()},
    }
    (args.out / name).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
