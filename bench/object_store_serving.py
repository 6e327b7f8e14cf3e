"""A new server on a version just published: model store on a volume (PVC) against a bucket;
and the bucket download's throughput against a plain copy with the same library.

    python bench/object_store_serving.py [--quick] [--models dense,large] [--repeats 3]
                                         [--poll-seconds 2] [--out bench/results]

Models, both trained by the project's trainer (``kerasop_trainer.train.run``, 1 epoch on the
sample CSV), so each version holds the files a published one holds (``model.keras`` with the
optimizer state, ``model.onnx``, ``metadata.json``):
  dense  examples/dense-classifier.yaml: 784 -> Dense(10, relu) -> Dense(1, sigmoid)
  large  the same job with 784 -> Dense(2048, relu) x 2 -> Dense(1, sigmoid): 93 MB (5.8M
         weights: model.keras 70 MB with Adam's two slots per weight, model.onnx 23 MB)

Serving, every repeat and model, the two modes in alternating order:
  volume        the version published into a local model store folder
                (``kerasop.store.ModelStore.new_version``: files copied into its staging folder,
                then the atomic rename), then a new server process on that folder
                (``kerasop-serve --store-root``): a pod with the PVC mounted.
  object-store  the version published to a bucket of a real S3 server (SeaweedFS, started as
                the tests start it: tests/support/s3.py) with ``ObjectModelStore.publish``
                (the files, then the manifest), then a new server process with ``--store-uri``
                and an empty mirror folder: a pod with an empty emptyDir. It downloads the
                version (sizes and SHA-256 checked), then loads it.
Each run is timed from the moment the publish returned (the version exists) to the first
successful prediction: the model's ready endpoint polled every 50 ms, then one v2 inference
request. The server's log gives the phases between (download done, load started). Every run
has a fresh folder and a fresh bucket prefix: only the OS's page cache is warm.

Download throughput, per model, the same repeats: ``ObjectModelStore.download`` of the version
(file by file, each checked against the manifest, then renamed into place) against fsspec's
recursive ``fs.get`` of the version's prefix on the same s3fs filesystem, the ``aws s3 cp
--recursive`` of this library (s3fs fetches the files concurrently and checks nothing).
MB/s: the manifest's bytes (10^6) per second.

Both servers poll with ``--poll-seconds`` (default 2 s, what the operator runs). With a bucket
the mirror and the version watcher are two loops, so a downloaded version can wait up to one
poll before the watcher loads it: the "load started" phase shows it.

Results: a table on stdout and bench/results/object_store_serving.json (``--quick``: the dense
model, 1 repeat, object_store_serving_quick.json).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerasop.objstore import ObjectModelStore, ObjectStore
from kerasop.spec import KerasTrainingJob, ObjectStoreSpec
from kerasop.store import ModelStore

sys.path.insert(0, str(Path(__file__).parent))
# tests.support.s3: the S3 server exactly as the tests start it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_peers import HOST, REPO, Body, Server, decode_answer, free_port, post

from tests.support.s3 import S3Server, s3_server, weed_binary

DENSE_JOB = REPO / "examples" / "dense-classifier.yaml"
LARGE_LAYERS = [
    {"type": "Dense", "units": 2048, "activation": "relu"},
    {"type": "Dense", "units": 2048, "activation": "relu"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]
MODELS = ("dense", "large")
MODES = ("volume", "object-store")
TRAIN_ROWS = 500
FEATURES = 784
STARTUP_TIMEOUT_S = 300.0
# The server's log lines that mark each phase (kerasop_server/mirror.py, manager.py).
PHASES = {
    "downloaded_s": "downloaded version",
    "load_started_s": "loading model",
    "loaded_s": "loaded model",
}
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"  # logging's asctime


def train_models(names: list[str], work: Path) -> dict[str, Path]:
    """Each model trained and published by the trainer into a local store: its version folder."""
    from kerasop_trainer import sample_data
    from kerasop_trainer.train import run

    sample_data.write_dense_csv(work / "data" / "dense" / "train.csv", rows=TRAIN_ROWS)
    example = next(yaml.safe_load_all(DENSE_JOB.read_text()))
    versions = {}
    for name in names:
        doc = copy.deepcopy(example)
        doc["metadata"]["name"] = name
        doc["spec"]["output"]["modelName"] = name
        doc["spec"]["training"]["epochs"] = 1
        if name == "large":
            doc["spec"]["model"]["layers"] = LARGE_LAYERS
        job = KerasTrainingJob.model_validate(doc)
        done = run(job, work / "data", work / "trained", f"{name}-bench", emit=lambda line: None)
        versions[name] = Path(done["modelPath"])
    return versions


def folder_bytes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def log_phases(log: Path, published_wall: float) -> dict[str, Any]:
    """Seconds from the publish to each phase the server logged, and the engine it loaded."""
    found: dict[str, Any] = {}
    for line in log.read_text(errors="replace").splitlines():
        for key, text in PHASES.items():
            if key not in found and text in line:
                stamp = datetime.strptime(line[:23], LOG_TIME).timestamp()
                found[key] = round(stamp - published_wall, 3)
        engine = re.search(r"\(engine (\w+)", line)
        if engine and "engine" not in found:
            found["engine"] = engine.group(1)
    return found


def first_prediction(
    label: str, name: str, store_args: list[str], workdir: Path, poll_seconds: float
) -> dict[str, Any]:
    """Seconds until a server started on ``store_args`` is ready and until it answered: timed
    from its start, which comes right after the publish returned."""
    port = free_port()
    argv = [
        sys.executable, "-m", "kerasop_server.main", "--model", name, "--host", HOST,
        "--port", str(port), "--grpc-port", "0", "--poll-seconds", str(poll_seconds),
        *store_args,
    ]  # fmt: skip
    server = Server(label, argv, port, name)
    row = np.random.default_rng(0).uniform(0, 1, FEATURES).astype("float32")
    tensor = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row.tolist()}
    body = Body("/v2/models/{model}/infer", json.dumps({"inputs": [tensor]}).encode())
    published, published_wall = time.perf_counter(), time.time()
    server.start(workdir)
    try:
        server.wait_ready(STARTUP_TIMEOUT_S, interval=0.05)
        ready = time.perf_counter()
        status, headers, content = post(server.url + body.path.format(model=name), body)
        answered = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"{label}: inference answered {status}: {content[:500]!r}")
        prediction = decode_answer("v2-json", headers, content)
        if prediction.shape != (1, 1):
            raise RuntimeError(f"{label}: prediction of shape {prediction.shape}")
    finally:
        server.stop()
    assert server.log is not None
    return {
        "ready_s": round(ready - published, 3),
        "serving_s": round(answered - published, 3),
        **log_phases(server.log, published_wall),
    }


def run_volume(
    name: str, version_dir: Path, work: Path, poll_seconds: float, label: str
) -> dict[str, Any]:
    root = work / f"pvc-{label}"
    started = time.perf_counter()
    with ModelStore(root).new_version(name) as pending:
        shutil.copytree(version_dir, pending.path, dirs_exist_ok=True)
    publish_s = time.perf_counter() - started
    timing = first_prediction(label, name, ["--store-root", str(root)], work, poll_seconds)
    return {"publish_s": round(publish_s, 3), **timing}


def bucket_store(s3: S3Server, uri: str) -> ObjectModelStore:
    """The model store at ``uri`` as the trainer and the server open it (keys from the env)."""
    options = ObjectStoreSpec.model_validate(s3.store_spec())
    return ObjectModelStore(uri, ObjectStore(options, "MODELS"))


def run_bucket(
    name: str, version_dir: Path, s3: S3Server, work: Path, poll_seconds: float, label: str
) -> dict[str, Any]:
    uri = s3.uri(f"{label}/models")
    started = time.perf_counter()
    bucket_store(s3, uri).publish(name, version_dir)
    publish_s = time.perf_counter() - started
    store_args = [
        "--store-root", str(work / f"mirror-{label}"), "--store-uri", uri,
        "--store-options", json.dumps(s3.store_spec()),
    ]  # fmt: skip
    timing = first_prediction(label, name, store_args, work, poll_seconds)
    return {"publish_s": round(publish_s, 3), **timing}


def measure_download(
    name: str, version_dir: Path, s3: S3Server, work: Path, repeats: int
) -> dict[str, Any]:
    """Seconds per copy of the version: the verified download and a plain recursive get."""
    bucket = bucket_store(s3, s3.uri(f"download-{name}-{uuid.uuid4().hex[:8]}"))
    version = bucket.publish(name, version_dir)
    files = {f["path"]: f["size"] for f in bucket.manifest(name, version)["files"]}
    source = bucket.version_uri(name, version)
    copies: dict[str, Callable[[Path], object]] = {
        "plain": lambda dest: bucket.store.fs.get(source + "/", str(dest), recursive=True),
        "verified": lambda dest: bucket.download(name, version, dest),
    }
    seconds: dict[str, list[float]] = {how: [] for how in copies}
    for repeat in range(repeats):
        # alternate which goes first, so neither always meets the other's warm caches
        for how in sorted(copies, reverse=repeat % 2 == 1):
            dest = work / f"{how}-{name}-{repeat}"
            started = time.perf_counter()
            copies[how](dest)
            seconds[how].append(time.perf_counter() - started)
            copied = folder_bytes(dest)
            if any(copied.get(path) != size for path, size in files.items()):
                raise RuntimeError(f"{how} copy of {source} differs from its manifest")
            shutil.rmtree(dest)
    size = sum(files.values())
    result: dict[str, Any] = {"bytes": size, "files": len(files)}
    for how, runs in seconds.items():
        result[how] = {
            "seconds": [round(s, 3) for s in runs],
            "mb_per_s_median": round(size / 1e6 / statistics.median(runs), 1),
            "mb_per_s_best": round(size / 1e6 / min(runs), 1),
        }
    result["ratio"] = round(
        result["verified"]["mb_per_s_median"] / result["plain"]["mb_per_s_median"], 2
    )
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["publish_s", "ready_s", "serving_s", *PHASES]
    summary: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if key in r]
        if values:
            summary[key] = {"min": min(values), "median": round(statistics.median(values), 3)}
    return summary


def bench_model(
    name: str, version_dir: Path, s3: S3Server, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in sorted(MODES, reverse=repeat % 2 == 1):
            label = f"{name}-{mode}-{repeat}"
            print(f"{label} ...", flush=True)
            if mode == "volume":
                timing = run_volume(name, version_dir, work, args.poll_seconds, label)
            else:
                timing = run_bucket(name, version_dir, s3, work, args.poll_seconds, label)
            runs[mode].append(timing)
    print(f"{name}: download throughput ...", flush=True)
    files = folder_bytes(version_dir)
    return {
        "model": name,
        "bytes": sum(files.values()),
        "files": files,
        "serving": {mode: {"runs": r, **summarize(r)} for mode, r in runs.items()},
        "download": measure_download(name, version_dir, s3, work, args.repeats),
    }


def print_tables(meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    print(
        f"\n{meta['machine']}, load average {meta['load_before']} before the run;"
        f" {meta['repeats']} repeats, --poll-seconds {meta['poll_seconds']}; {meta['seaweedfs']}"
    )
    print("\nSeconds from the version published to the first prediction of a new server"
          " (min / median; phases: median)\n")  # fmt: skip
    print("| model | MB | store | engine | publish | -> downloaded | -> load started | -> ready"
          " | -> first prediction (min / median) |")  # fmt: skip
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")

    def med(summary: dict[str, Any], key: str) -> str:
        return f"{summary[key]['median']:.2f}" if key in summary else "-"

    for model in results:
        mb = model["bytes"] / 1e6
        for mode in MODES:
            s = model["serving"][mode]
            engines = ",".join(sorted({r.get("engine", "?") for r in s["runs"]}))
            print(
                f"| {model['model']} | {mb:.1f} | {mode} | {engines} | {med(s, 'publish_s')} |"
                f" {med(s, 'downloaded_s')} | {med(s, 'load_started_s')} | {med(s, 'ready_s')} |"
                f" {s['serving_s']['min']:.2f} / {s['serving_s']['median']:.2f} |"
            )
    print("\nDownload of the version from the bucket, MB/s (median / best)\n")
    print("| model | MB | files | plain fs.get (recursive) | ObjectModelStore.download"
          " (verified) | verified / plain |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for model in results:
        d = model["download"]
        print(
            f"| {model['model']} | {d['bytes'] / 1e6:.1f} | {d['files']} |"
            f" {d['plain']['mb_per_s_median']:.0f} / {d['plain']['mb_per_s_best']:.0f} |"
            f" {d['verified']['mb_per_s_median']:.0f} / {d['verified']['mb_per_s_best']:.0f} |"
            f" {d['ratio']:.2f} |"
        )


def versions(*packages: str) -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in packages}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the dense model, 1 repeat")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--poll-seconds", type=float, default=2.0, help="the servers' store poll")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.repeats = "dense", 1
    names = [m for m in args.models.split(",") if m]
    for name in names:
        if name not in MODELS:
            p.error(f"unknown model {name}; choose from {', '.join(MODELS)}")
    started = time.time()
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}",
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "repeats": args.repeats,
        "poll_seconds": args.poll_seconds,
        "seaweedfs": weed_binary().resolve().name,
        "versions": versions("s3fs", "fsspec", "botocore"),
    }
    with tempfile.TemporaryDirectory(prefix="kerasop-objstore-bench-") as tmp:
        work = Path(tmp)
        print(f"training {', '.join(names)} ...", flush=True)
        trained = train_models(names, work)
        (work / "s3").mkdir()
        with s3_server(work / "s3") as s3:
            # The bench publishes and the servers download with the keys the operator would
            # hand the pods (KERASOP_MODELS_AWS_*); the servers inherit this env.
            os.environ.update(s3.env("MODELS"))
            results = [bench_model(name, trained[name], s3, work, args) for name in names]
    meta["seconds"] = round(time.time() - started)
    print_tables(meta, results)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / (
        "object_store_serving_quick.json" if args.quick else "object_store_serving.json"
    )
    target.write_text(json.dumps({"meta": meta, "models": results}, indent=1) + "\n")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
