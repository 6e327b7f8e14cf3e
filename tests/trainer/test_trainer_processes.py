"""The trainer as real processes: killed and resumed; two data-parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from trainerkit import DENSE_MODEL, Events, free_port, make_job

from kerasop import events
from kerasop.store import ModelStore
from kerasop_trainer.train import run

DEADLINE_S = 240
EPOCHS = 16  # short epochs; enough that the kills land well before the end


def _trainer(
    spec: Path,
    data_root: Path,
    store: Path,
    job_id: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasop_trainer.main",
            "--spec",
            str(spec),
            "--data-root",
            str(data_root),
            "--store-root",
            str(store),
            "--job-id",
            job_id,
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),
        text=True,
        env=env,
    )


def _write_spec(path: Path, job) -> Path:
    path.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


def _guard(proc: subprocess.Popen) -> threading.Timer:
    timer = threading.Timer(DEADLINE_S, proc.kill)
    timer.daemon = True
    timer.start()
    return timer


def _event(line: str) -> dict | None:
    event = events.decode(line)
    return event.model_dump(by_alias=True) if event else None


def _run_until(proc: subprocess.Popen, sig: int, first_epoch: int) -> list[dict]:
    """Read events until an epoch >= ``first_epoch`` is reported, then send ``sig``."""
    timer = _guard(proc)
    seen: list[dict] = []
    try:
        for line in proc.stdout:
            event = _event(line)
            if event:
                seen.append(event)
            if event and event["kerasop"] == "epoch" and event["epoch"] >= first_epoch:
                os.kill(proc.pid, sig)
                break
        seen.extend(e for e in map(_event, proc.stdout) if e)  # what it said on the way out
    finally:
        proc.wait()
        timer.cancel()
    return seen


def test_killed_trainer_resumes_from_its_last_epoch_and_sigterm_from_its_last_batch(
    tmp_path, data_root, store
):
    job = make_job(
        "resume",
        {"format": "csv", "path": "small.csv", "validationSplit": 0.2},
        DENSE_MODEL,
        {"epochs": EPOCHS, "batchSize": 16, "checkpointIntervalSeconds": 0},  # every epoch
    )
    spec = _write_spec(tmp_path / "job.json", job)
    model_store = ModelStore(store)
    ckpt = model_store.checkpoint_dir("resume", "job-r")

    # 1. SIGKILL after the 3rd epoch: at most the epoch in progress is lost
    first = _trainer(spec, data_root, store, "job-r", tmp_path / "first.log")
    seen = _run_until(first, signal.SIGKILL, 3)
    epochs = [e["epoch"] for e in seen if e["kerasop"] == "epoch"]
    assert epochs[:3] == [1, 2, 3], (seen, (tmp_path / "first.log").read_text()[-3000:])
    assert first.returncode == -signal.SIGKILL
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] >= 3 and (ckpt / state["file"]).is_file()
    assert model_store.versions("resume") == []
    import keras

    saved = keras.saving.load_model(ckpt / state["file"])  # weights + optimizer state
    steps_per_epoch = -(-320 // 16)  # 400 rows, 20% held out, batch 16
    assert int(saved.optimizer.iterations.numpy()) == state["epoch"] * steps_per_epoch

    # 2. the rerun resumes; SIGTERM (pod deletion, preemption) stops it cleanly between two
    # batches, where it saves a checkpoint, with a failed event
    log = tmp_path / "termination-log"
    second = _trainer(
        spec,
        data_root,
        store,
        "job-r",
        tmp_path / "second.log",
        extra_args=("--termination-log", str(log)),
    )
    seen = _run_until(second, signal.SIGTERM, 1)
    start = next(e for e in seen if e["kerasop"] == "start")
    assert start["resumedFromEpoch"] >= 3
    assert second.returncode == 143, (tmp_path / "second.log").read_text()[-3000:]
    assert start["stepsDone"] == start["resumedFromEpoch"] * steps_per_epoch
    saved_at = next(e for e in seen if e["kerasop"] == "checkpoint")
    resumed_at, step = saved_at["epoch"], saved_at["step"]
    assert resumed_at > start["resumedFromEpoch"] or step > 0, saved_at
    assert saved_at["stepsDone"] == resumed_at * steps_per_epoch + step  # every finished batch
    failed = next(e for e in seen if e["kerasop"] == "failed")
    assert failed["reason"] == "Terminated" and failed["exitCode"] == 143
    assert f"epoch {resumed_at}, step {step}" in failed["message"], failed
    assert json.loads(log.read_text()) == failed
    assert model_store.versions("resume") == []
    assert not [p for p in (store / "resume").iterdir() if p.name.startswith(".staging")]
    state = json.loads((ckpt / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (resumed_at, step)

    # 3. the last run finishes from there and publishes
    ev = Events()
    done = run(job, data_root, store, "job-r", emit=ev)
    start = ev.of("start")[0]
    assert (start["resumedFromEpoch"], start["resumedFromStep"]) == (resumed_at, step)
    assert start["stepsDone"] == saved_at["stepsDone"]  # no batch trained twice
    assert [e["epoch"] for e in ev.of("epoch")] == list(range(resumed_at + 1, EPOCHS + 1))
    assert done["epochsRun"] == EPOCHS and done["modelVersion"] == 1
    assert set(done["metrics"]) == {"loss", "accuracy"}
    assert not ckpt.exists()


def test_sigterm_mid_epoch_resumes_at_the_next_batch(tmp_path, data_root, store):
    """Stopped 6 batches into epoch 2, the rerun trains that epoch's other 14 batches, then
    the rest: no batch is trained twice or skipped (the optimizer's step count says so)."""
    from kerasop_trainer import termination

    job = make_job(
        "midway", {"format": "csv", "path": "small.csv", "validationSplit": 0.2}, DENSE_MODEL,
        {"epochs": 4, "batchSize": 16},  # 20 batches an epoch; no epoch checkpoint but the last
    )  # fmt: skip
    ckpt = ModelStore(store).checkpoint_dir("midway", "job-m")

    def kill_at(epoch: int, epochs: int, step: int, steps: int | None, loss: float | None) -> None:
        if (epoch, step) == (2, 6):
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    first = Events()
    try:
        with pytest.raises(termination.Terminated, match="epoch 1, step 6"):
            run(job, data_root, store, "job-m", emit=first, on_batch=kill_at)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert first.of("checkpoint") == [
        {"kerasop": "checkpoint", "epoch": 1, "step": 6, "stepsDone": 26}
    ]
    state = json.loads((ckpt / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 6)

    batches: list[tuple[int, int]] = []
    second = Events()
    done = run(
        job, data_root, store, "job-m", emit=second,
        on_batch=lambda epoch, epochs, step, steps, loss: batches.append((epoch, step)),
    )  # fmt: skip
    start = second.of("start")[0]
    assert (start["resumedFromEpoch"], start["resumedFromStep"], start["stepsDone"]) == (1, 6, 26)
    assert [e["epoch"] for e in second.of("epoch")] == [2, 3, 4]
    per_epoch = [sum(1 for e, _ in batches if e == n) for n in (2, 3, 4)]
    assert per_epoch == [14, 20, 20]  # 6 + 14: epoch 2 whole, once
    assert done["epochsRun"] == 4 and done["modelVersion"] == 1
    assert not ckpt.exists()


def test_two_workers_train_data_parallel_and_worker0_publishes(tmp_path, data_root, store):
    job = make_job(
        "multi",
        {"format": "csv", "path": "small.csv", "validationSplit": 0.25},
        DENSE_MODEL,
        {"epochs": 2, "batchSize": 32, "backend": "jax"},
        workers=2,
    )
    spec = _write_spec(tmp_path / "job.json", job)
    env = {"KERASOP_NUM_WORKERS": "2", "KERASOP_COORDINATOR": f"127.0.0.1:{free_port()}"}
    procs = [
        _trainer(
            spec,
            data_root,
            store,
            "job-m",
            tmp_path / f"worker{i}.log",
            {**env, "KERASOP_WORKER_INDEX": str(i)},
        )
        for i in range(2)
    ]
    timers = [_guard(p) for p in procs]
    outputs = [p.communicate()[0] for p in procs]
    for t in timers:
        t.cancel()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs

    last = [events.last_events(out.splitlines()) for out in outputs]
    starts = [e.start.model_dump(by_alias=True) for e in last]
    assert [s["workerIndex"] for s in starts] == [0, 1]
    assert all(s["workers"] == 2 and s["backend"] == "jax" for s in starts)
    assert [s["shardSize"] for s in starts] == [150, 150] and starts[0]["trainRows"] == 300
    done = [e.done.model_dump(by_alias=True) for e in last]
    assert done[0]["modelVersion"] == 1 and done[1]["modelVersion"] is None
    # one model: the workers agree on the (globally reduced) validation metrics
    assert done[0]["metrics"] == done[1]["metrics"]
    assert ModelStore(store).versions("multi") == [1]
    meta = ModelStore(store).metadata("multi", 1).to_json_dict()
    assert meta["epochsRun"] == 2 and meta["spec"]["workers"] == 2
    assert not ModelStore(store).checkpoint_dir("multi", "job-m").exists()


def test_cli_chooses_the_backend_before_keras_is_imported(tmp_path):
    """Importing the trainer does not import Keras; the spec decides KERAS_BACKEND/KERAS_HOME."""
    job = make_job(
        "env",
        {"format": "imageFolder", "path": "imgs"},
        {"transfer": {"application": "VGG16", "weights": "imagenet"}},
        {"backend": "jax"},
    )
    spec = _write_spec(tmp_path / "job.json", job)
    code = (
        "import os, sys\n"
        "from kerasop_trainer import main, distributed, data, model, sample_data\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'imported early'\n"
        "job = main.load_job(sys.argv[1])\n"
        "distributed.prepare_environment(job, sys.argv[2], distributed.resolve_backend(job, distributed.WorkerConfig()))\n"
        "print(os.environ['KERAS_BACKEND'], os.environ['KERAS_HOME'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(spec), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["jax", str(tmp_path / "store" / ".cache" / "keras")]
