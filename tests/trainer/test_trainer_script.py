"""Script mode: the user's own training script (examples/script/train.py) run by
``kerasop-train`` as a real process: progress events, SIGTERM and resume, a published
version served over both protocols, and the script's failures as UserCodeError."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from trainerkit import assert_store_clean, decoded

from kerasop import events
from kerasop.events import EXIT_USER_CODE
from kerasop.spec import KerasTrainingJob
from kerasop.store import ModelStore
from kerasop_trainer.main import run_cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "script" / "train.py"
DEADLINE_S = 300


def _job(name: str, command: list[str], epochs: int = 12) -> KerasTrainingJob:
    return KerasTrainingJob.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "data": {"format": "csv", "path": "small.csv"},
                "script": {"command": command},
                # a checkpoint after every epoch: the tests stop and resume the scripts
                "training": {"epochs": epochs, "checkpointIntervalSeconds": 0},
            },
        }
    )


def _spec_file(tmp_path: Path, job: KerasTrainingJob) -> Path:
    path = tmp_path / f"{job.metadata.name}.json"
    path.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


def _argv(spec: Path, data_root: Path, store: Path, job_id: str, log: Path) -> list[str]:
    return [
        "--spec", str(spec), "--data-root", str(data_root), "--store-root", str(store),
        "--job-id", job_id, "--termination-log", str(log),
    ]  # fmt: skip


def test_script_reports_resumes_publishes_and_is_served(tmp_path, data_root, store):
    job = _job("scripted", [sys.executable, str(EXAMPLE)])
    spec = _spec_file(tmp_path, job)
    log = tmp_path / "termination-log"
    argv = [sys.executable, "-m", "kerasop_trainer.main", *_argv(spec, data_root, store, "s1", log)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    # 1. SIGTERM (pod deletion) after epoch 3: the script is stopped, its checkpoint stays
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    timer = threading.Timer(DEADLINE_S, proc.kill)
    timer.start()
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = decoded(line)
            if event:
                seen.append(event)
            if event and event["kerasop"] == "epoch" and event["epoch"] >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        seen.extend(e for e in map(decoded, proc.stdout) if e)
    finally:
        proc.wait()
        timer.cancel()
    assert seen[0]["kerasop"] == "start" and seen[0]["resumedFromEpoch"] == 0, seen
    assert seen[0]["jobId"] == "s1" and seen[0]["epochs"] == 12
    epoch3 = next(e for e in seen if e["kerasop"] == "epoch" and e["epoch"] == 3)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch3["metrics"])
    assert proc.returncode == 143 and seen[-1]["reason"] == "Terminated", seen[-3:]
    assert ModelStore(store).versions("scripted") == []
    state = json.loads(
        (ModelStore(store).checkpoint_dir("scripted", "s1") / "state.json").read_text()
    )
    assert state["epoch"] >= 3

    # 2. the restarted job continues from the checkpoint and publishes
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_cli(_argv(spec, data_root, store, "s1", log)) == 0
    got = [e for e in map(decoded, out.getvalue().splitlines()) if e]
    assert got[0]["kerasop"] == "start" and got[0]["resumedFromEpoch"] == state["epoch"]
    assert [e["epoch"] for e in got if e["kerasop"] == "epoch"] == list(
        range(state["epoch"] + 1, 13)
    )
    done = got[-1]
    assert done["kerasop"] == "done" and done["modelVersion"] == 1
    assert json.loads(log.read_text())["modelVersion"] == 1
    assert done["metrics"]["accuracy"] >= 0.85, done
    vdir = Path(done["modelPath"])
    files = {p.name for p in vdir.iterdir()}
    # The script's adapted Normalization layer exports as extra ONNX graph inputs, which the
    # server cannot feed: no model.onnx is claimed, so the operator serves it with Keras.
    # No SavedModel either: spec.output.formats does not ask for one.
    assert files == {"model.keras", "metadata.json"}
    assert done["modelFormats"] == ["keras"]
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["input"] == {
        "kind": "tabular", "shape": [32], "dtype": "float32",
        "featureNames": [f"f{i}" for i in range(32)],
    }  # fmt: skip
    assert meta["output"] == {"kind": "binary", "shape": [1], "classNames": ["0", "1"]}
    assert meta["spec"]["script"]["command"][1] == str(EXAMPLE)
    assert not ModelStore(store).checkpoint_dir("scripted", "s1").exists()

    # 3. served like any other version
    import keras

    from kerasop_server.config import ServerConfig
    from kerasop_server.runner import BackgroundServer

    x = np.loadtxt(data_root / "small.csv", delimiter=",", skiprows=1, max_rows=3)[:, :32]
    expected = keras.saving.load_model(vdir / "model.keras").predict(x, verbose=0)
    server = BackgroundServer(
        ServerConfig(store_root=store, model="scripted", host="127.0.0.1", port=0)
    )
    server.start(timeout=120)
    try:
        r = httpx.post(f"{server.url}/v1/models/scripted:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["predictions"]), expected, atol=1e-5)
        body = {
            "inputs": [
                {"name": "input", "shape": [3, 32], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        r = httpx.post(f"{server.url}/v2/models/scripted/infer", json=body)
        assert r.status_code == 200, r.text
        got_v2 = np.array(r.json()["outputs"][0]["data"]).reshape(3, 1)
        np.testing.assert_allclose(got_v2, expected, atol=1e-5)
    finally:
        server.stop()


BROKEN = {
    "raises": "import sys\nprint('working', flush=True)\ndef step():\n    raise ValueError('my bug')\nstep()\n",
    "no-publish": "print('trained, forgot to publish')\n",
}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("raises", ["exited with code 1", "ValueError: my bug", "line 4, in step"]),
        ("no-publish", ["without publishing a model version", "api.publish"]),
        ("missing", ["cannot be started"]),
    ],
)
def test_script_failures_are_user_code_errors(case, expected, tmp_path, store):
    data = tmp_path / "data"
    data.mkdir()
    if case == "missing":
        command = ["/nonexistent/train"]
    else:
        (data / "user.py").write_text(BROKEN[case])
        command = [sys.executable, "user.py"]  # relative: the script runs in the data folder
    job = _job("broken", command)
    log = tmp_path / "log"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_cli(_argv(_spec_file(tmp_path, job), data, store, "b", log))
    failed = events.last_events(out.getvalue().splitlines()).failed.model_dump(by_alias=True)
    assert (code, failed["reason"]) == (EXIT_USER_CODE, "UserCodeError"), failed
    for text in expected:
        assert text in failed["message"], failed["message"]
    assert json.loads(log.read_text())["reason"] == "UserCodeError"
    assert_store_clean(store, "broken")


def test_example_script_runs_with_kerasop_train(tmp_path, data_root):
    """`kerasop train -f` runs a script job the way a pod does (relative command path), and
    `python` in the command is the interpreter running kerasop, not the first one on PATH
    (a venv that is not activated, a pipx install)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(data_root / "small.csv", data / "small.csv")
    shutil.copy(EXAMPLE, data / "train.py")
    job = _job("local-script", ["python", "train.py"], epochs=2)
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    elsewhere = tmp_path / "other-python"  # what PATH finds first: not this venv's Python
    elsewhere.mkdir()
    impostor = elsewhere / "python"
    impostor.write_text("#!/bin/sh\necho 'not the Python running kerasop' >&2\nexit 3\n")
    impostor.chmod(0o755)
    kerasop = Path(sys.executable).with_name("kerasop")  # this venv's console script
    result = subprocess.run(
        [str(kerasop), "train", "-f", str(spec),
         "--data-dir", str(data), "--store", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{elsewhere}:/usr/bin:/bin"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert ModelStore(tmp_path / "store").versions("local-script") == [1]


WORKER_SCRIPT = '''
"""A data-parallel script: joins the other workers, trains on its share of the rows."""
import keras
import numpy as np

from kerasop_trainer import api

place = api.join_workers()
table = np.loadtxt(api.data_root() / "small.csv", delimiter=",", skiprows=1, dtype="float32")
x, y = table[:, :-1], table[:, -1]
cut = 300
mine = np.arange(cut)[place.index :: place.count]  # this worker's share


def build():
    inputs = keras.Input((x.shape[1],))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


model, initial_epoch = api.resume(build)
model.fit(
    x[mine], y[mine], epochs=api.epochs(), initial_epoch=initial_epoch,
    batch_size=32 // place.count, callbacks=[api.callback(initial_epoch)], verbose=0,
)
print(f"worker {place.index}/{place.count} trained {len(mine)} rows", flush=True)
api.publish(model, model.evaluate(x[cut:], y[cut:], return_dict=True, verbose=0))
'''


def test_two_script_workers_get_the_worker_environment_and_worker0_publishes(
    tmp_path, data_root, store
):
    """Two script processes with the pods' worker environment (as the operator sets it):
    each joins the coordinator, trains its half, and only worker 0 writes the version."""
    from trainerkit import free_port

    script = tmp_path / "workers.py"
    script.write_text(WORKER_SCRIPT)
    job = _job("multi-script", [sys.executable, str(script)], epochs=2)
    job.spec.workers = 2
    spec = _spec_file(tmp_path, job)
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="jax",
        KERASOP_NUM_WORKERS="2",
        KERASOP_COORDINATOR=f"127.0.0.1:{free_port()}",
    )
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(tmp_path / f"err{i}", "wb")) for i in range(2)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kerasop_trainer.main",
                    *_argv(spec, data_root, store, "m1", tmp_path / f"log{i}"),
                ],
                stdout=subprocess.PIPE,
                stderr=logs[i],
                text=True,
                env={**env, "KERASOP_WORKER_INDEX": str(i)},
            )
            for i in range(2)
        ]
        timers = [threading.Timer(DEADLINE_S, p.kill) for p in procs]
        for t in timers:
            t.start()
        outputs = [p.communicate()[0] for p in procs]
        for t in timers:
            t.cancel()
    errors = [(tmp_path / f"err{i}").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], errors

    for i, out in enumerate(outputs):
        assert f"worker {i}/2 trained 150 rows" in out, out
    last = [events.last_events(out.splitlines()) for out in outputs]
    starts = [e.start.model_dump(by_alias=True) for e in last]
    assert [(s["workerIndex"], s["workers"], s["backend"]) for s in starts] == [
        (0, 2, "jax"),
        (1, 2, "jax"),
    ]
    done = [e.done.model_dump(by_alias=True) for e in last]
    assert done[0]["modelVersion"] == 1 and done[1]["modelVersion"] is None
    assert ModelStore(store).versions("multi-script") == [1]
    meta = ModelStore(store).metadata("multi-script", 1).to_json_dict()
    assert meta["spec"]["workers"] == 2 and meta["epochsRun"] == 2
    assert not ModelStore(store).checkpoint_dir("multi-script", "m1").exists()
