"""spec.tuning on this machine: real keras-tuner oracles, real Keras trials (tiny data, CPU)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kerasop.contracts import ENV_KERASTUNER_ORACLE_IP
from kerasop.store import ModelStore
from kerasop_trainer import sample_data, tuning
from tests.trainer.trainerkit import Events, free_port, make_job

FEATURES = 16


@pytest.fixture(scope="module")
def split_data(tmp_path_factory) -> Path:
    """The dense sample, 300 training rows and 100 validation rows in two files (so a
    plain keras-tuner run reads exactly the same validation data)."""
    root = tmp_path_factory.mktemp("tuning-data")
    sample_data.write_dense_csv(root / "all.csv", rows=400, features=FEATURES, seed=5)
    rows = list(csv.reader((root / "all.csv").open()))
    for name, part in (("train.csv", rows[1:301]), ("val.csv", rows[301:])):
        with (root / name).open("w", newline="") as fh:
            csv.writer(fh).writerows([rows[0], *part])
    return root


def read_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype="float32")
    return table[:, :-1], table[:, -1:]


LEARNING_RATES = [0.00001, 0.0003, 0.03]
DATA = {"format": "csv", "path": "train.csv", "validationPath": "val.csv", "normalize": False}


def tuned_job(name: str, space: dict, **tuning_fields):
    return make_job(
        name,
        DATA,
        {
            "layers": [
                {"type": "Dense", "units": 8, "activation": "relu"},
                {"type": "Dense", "units": 1, "activation": "sigmoid"},
            ]
        },
        {"epochs": 2, "batchSize": 32, "seed": 3},
        tuning={"space": space, **tuning_fields},
    )


def test_search_finds_the_same_best_trial_as_keras_tuner_in_one_process(
    split_data, tmp_path, monkeypatch
):
    import keras
    import keras_tuner as kt

    monkeypatch.delenv(ENV_KERASTUNER_ORACLE_IP, raising=False)
    space = {"training.learningRate": {"choice": LEARNING_RATES}}
    job = tuned_job("searched", space, objective={"metric": "val_loss"}, maxTrials=3, seed=11)
    events = Events()
    done = tuning.run(job, split_data, tmp_path / "store", "search-1", emit=events)

    # keras-tuner on its own: the same space, seed and objective, the same network.
    def build(hp):
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        lr = hp.Choice("training.learningRate", LEARNING_RATES, ordered=False)
        model.compile(keras.optimizers.Adam(lr), loss="binary_crossentropy", metrics=["accuracy"])
        return model

    x, y = read_xy(split_data / "train.csv")
    xv, yv = read_xy(split_data / "val.csv")
    plain = kt.RandomSearch(
        build,
        objective=kt.Objective("val_loss", "min"),
        max_trials=3,
        seed=11,
        directory=str(tmp_path / "kt"),
        project_name="plain",
    )
    plain.search(x, y, validation_data=(xv, yv), epochs=2, batch_size=32, verbose=0)
    reference = plain.oracle.get_best_trials(1)[0]

    trials = events.of("trial")
    assert [t["status"] for t in trials] == ["completed"] * 3
    # the same trials in the same order (the same oracle, the same seed) ...
    ours = {t["trialId"]: t["values"]["training.learningRate"] for t in trials}
    theirs = {t.trial_id: t.hyperparameters.values["training.learningRate"]
              for t in plain.oracle.trials.values()}  # fmt: skip
    assert ours == theirs
    # ... and the same best one
    assert trials[-1]["best"][0]["trialId"] == reference.trial_id
    assert reference.hyperparameters.values["training.learningRate"] == 0.03

    # the best trial is published as the job's version, its lineage naming search and trial
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["lineage"]["search"] == {
        "job": "searched",
        "jobId": "search-1",
        "trial": reference.trial_id,
        "hyperparameters": {"training.learningRate": 0.03},
        "algorithm": "random",
    }
    assert meta["lineage"]["jobId"] == f"search-1-trial-{reference.trial_id}"
    assert meta["spec"]["training"]["learningRate"] == 0.03
    assert ModelStore(tmp_path / "store").versions("searched") == [1]
    assert not (tmp_path / "store" / "searched" / ".checkpoints").exists()  # no trial's left
    # trial events carry the trial's epoch progress, named by trial
    assert {e["trialId"] for e in events.of("epoch")} == set(ours)


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(
    split_data, tmp_path, monkeypatch
):
    monkeypatch.delenv(ENV_KERASTUNER_ORACLE_IP, raising=False)
    job = make_job(
        "diverging",
        DATA,
        {
            "layers": [
                {"type": "Dense", "units": 8, "activation": "relu"},
                {"type": "Dense", "units": 1},
            ]
        },
        {"epochs": 2, "optimizer": "sgd", "loss": "mean_squared_error", "metrics": ["mae"]},
        tuning={
            "space": {"training.learningRate": {"choice": [0.01, 10.0]}},
            "objective": {"metric": "val_loss"},
            "maxTrials": 2,
        },
    )
    events = Events()
    done = tuning.run(job, split_data, tmp_path / "store", "search-2", emit=events)
    trials = {t["values"]["training.learningRate"]: t for t in events.of("trial")}
    assert trials[10.0]["status"] == "failed"
    assert "loss is nan" in trials[10.0]["message"] or "loss is inf" in trials[10.0]["message"]
    assert trials[0.01]["status"] == "completed"
    assert events.of("trial")[-1]["done"] == 2
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["lineage"]["search"]["hyperparameters"] == {"training.learningRate": 0.01}


def test_a_restarted_search_reloads_the_oracle_and_goes_on(split_data, tmp_path, monkeypatch):
    """The oracle's state is on the model volume: a second run of the same search id runs
    no trial again, and publishes the same best trial."""
    monkeypatch.delenv(ENV_KERASTUNER_ORACLE_IP, raising=False)
    space = {"model.layers[0].units": {"intRange": [2, 8, 2]}}
    job = tuned_job("restarted", space, maxTrials=2, seed=1)
    first = Events()
    tuning.run(job, split_data, tmp_path / "store", "search-3", emit=first)
    again = Events()
    done = tuning.run(job, split_data, tmp_path / "store", "search-3", emit=again)
    assert len(first.of("trial")) == 2 and again.of("trial") == []
    best = first.of("trial")[-1]["best"][0]
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["lineage"]["search"]["trial"] == best["trialId"]


def test_median_stopping_stops_trials_worse_than_the_finished_ones(
    split_data, tmp_path, monkeypatch
):
    monkeypatch.delenv(ENV_KERASTUNER_ORACLE_IP, raising=False)
    space = {"training.learningRate": {"choice": [0.05, 0.00001, 0.00002]}}
    job = tuned_job(
        "median",
        space,
        objective={"metric": "val_loss"},
        maxTrials=3,
        seed=4,
        earlyStopping={"afterEpochs": 1, "minTrials": 1},
    )
    job.spec.training.epochs = 3
    events = Events()
    done = tuning.run(job, split_data, tmp_path / "store", "search-4", emit=events)
    trials = events.of("trial")
    order = [t["values"]["training.learningRate"] for t in trials]
    fast = order.index(0.05)
    assert fast < 2, f"seed 4 puts the fast trial last: {order}"  # the test needs one after it
    assert "stopped early" not in trials[fast].get("message", "")
    for later in trials[fast + 1 :]:
        assert later["status"] == "completed"
        assert later["message"].startswith("stopped early after epoch 1: loss"), later
        epochs = [e for e in events.of("epoch") if e["trialId"] == later["trialId"]]
        assert [e["epoch"] for e in epochs] == [1]
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["lineage"]["search"]["hyperparameters"] == {"training.learningRate": 0.05}


@pytest.mark.parametrize(
    "value, others, direction, expected",
    [
        (0.9, [[0.5, 0.4], [0.7]], "min", 0.6),  # worse than the median of 0.5 and 0.7
        (0.5, [[0.5, 0.4], [0.7]], "min", None),  # not worse
        (0.9, [[0.5]], "min", None),  # too few trials got that far (min 2)
        (0.2, [[0.5], [0.7], [0.9]], "max", 0.7),
    ],
)
def test_worse_than_median(value, others, direction, expected):
    assert tuning.worse_than_median(value, 1, others, direction, 2) == expected


def test_the_pod_index_names_the_tuner_and_the_chief_serves_on_all_addresses():
    assert tuning.distributed_role({}) is None  # a local search
    chief = {"KERASTUNER_ORACLE_IP": "j-trainer-0.j-workers.ns.svc", "KERASOP_TUNER_INDEX": "0"}
    assert tuning.distributed_role(chief) == "chief"
    assert chief["KERASTUNER_TUNER_ID"] == "chief" and chief["KERASTUNER_ORACLE_IP"] == "0.0.0.0"
    worker = {"KERASTUNER_ORACLE_IP": "j-trainer-0.j-workers.ns.svc", "KERASOP_TUNER_INDEX": "2"}
    assert tuning.distributed_role(worker) == "tuner2"
    assert worker["KERASTUNER_ORACLE_IP"] == "j-trainer-0.j-workers.ns.svc"


def test_the_chief_waits_for_its_own_oracle_server_and_not_for_a_dead_one():
    port = free_port()
    assert not tuning.wait_for_port("127.0.0.1", port, alive=lambda: False)
    with socket.create_server(("127.0.0.1", port)):
        assert tuning.wait_for_port("127.0.0.1", port, alive=lambda: True)


def tuner_processes(job, data: Path, tmp_path: Path, job_id: str):
    """``start(index)``: a kerasop-train process of ``job``'s distributed search (index 0 the
    chief), all sharing one oracle port and the model store under ``tmp_path``."""
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    port = str(free_port())

    def start(index: int) -> subprocess.Popen:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port, KERASOP_TUNER_INDEX=str(index))  # fmt: skip
        return subprocess.Popen(
            [sys.executable, "-m", "kerasop_trainer.main", "--spec", str(spec), "--data-root",
             str(data), "--store-root", str(tmp_path / "store"), "--job-id", job_id],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip

    return start


def test_a_distributed_search_runs_trials_on_the_tuner_workers(split_data, tmp_path):
    """keras-tuner's own distributed mode, as the operator's pods run it: three
    kerasop-train processes, index 0 the chief (the oracle, trials of its own as tuner0,
    then the publishing), 1 and 2 tuner workers; every trial runs once, somewhere."""
    job = tuned_job("spread", {"model.layers[0].units": {"choice": [2, 4, 8]}}, maxTrials=3)
    job.spec.training.epochs = 1
    start = tuner_processes(job, split_data, tmp_path, "spread-1")

    pods = [start(0)]
    time.sleep(3)  # the chief's server first, as the Job's pods usually start
    pods += [start(1), start(2)]
    outputs = []
    for proc in pods:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out
        outputs.append(Events())
        for line in out.splitlines():
            outputs[-1](line)
    chief, *workers = outputs
    assert [t["done"] for t in chief.of("trial")] == [1, 2, 3]
    started = [e["trialId"] for out in outputs for e in out.of("start") if "trialId" in e]
    assert sorted(started) == sorted(t["trialId"] for t in chief.of("trial"))  # each trial once
    (done,) = chief.of("done")
    assert done["modelVersion"] == 1
    assert all(w.of("done") == [] for w in workers)


def test_a_killed_tuner_worker_restarted_with_its_index_resumes_its_trial(split_data, tmp_path):
    """What the Job controller does to a deleted tuner pod: a new process with the same
    index gets its ongoing trial back from the chief and resumes it from its checkpoint."""
    job = tuned_job("resumed", {"model.layers[0].units": {"choice": [2, 4]}}, maxTrials=2)
    job.spec.training.epochs = 12
    job.spec.training.batch_size = 2
    job.spec.training.checkpoint_interval_seconds = 0
    start = tuner_processes(job, split_data, tmp_path, "resumed-1")

    chief = start(0)
    time.sleep(3)
    worker = start(1)
    killed = Events()
    assert worker.stdout is not None
    for line in worker.stdout:
        killed(line)
        epochs = killed.of("epoch")
        if epochs and epochs[-1]["epoch"] >= 2:
            worker.kill()
            break
    worker.wait(timeout=60)
    trial, last = epochs[-1]["trialId"], epochs[-1]["epoch"]
    assert last < 12, "the trial ended before the kill"

    again = start(1)
    out, _ = again.communicate(timeout=600)
    chief_out, _ = chief.communicate(timeout=120)
    assert again.returncode == 0 and chief.returncode == 0
    resumed = Events()
    for line in out.splitlines():
        resumed(line)
    first_start = resumed.of("start")[0]
    assert first_start["trialId"] == trial  # the same trial, not a new one
    assert last <= first_start["resumedFromEpoch"] <= last + 1  # from its checkpoint
    chief_events = Events()
    for line in chief_out.splitlines():
        chief_events(line)
    assert [t["done"] for t in chief_events.of("trial")] == [1, 2]
    assert chief_events.of("done")[0]["modelVersion"] == 1


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_publish_their_best_trial(
    algorithm, split_data, tmp_path, monkeypatch
):
    monkeypatch.delenv(ENV_KERASTUNER_ORACLE_IP, raising=False)
    space = {"training.learningRate": {"logUniform": [0.0001, 0.05]}}
    job = tuned_job(f"by-{algorithm}", space, algorithm=algorithm, maxTrials=3, seed=2)
    job.spec.training.epochs = 3
    events = Events()
    done = tuning.run(job, split_data, tmp_path / "store", "search-5", emit=events)
    trials = events.of("trial")
    assert 1 <= len(trials) <= 3 and trials[-1]["done"] == len(trials)
    assert all(set(t["values"]) == {"training.learningRate"} for t in trials)  # no tuner/...
    per_trial = {}
    for e in events.of("epoch"):
        per_trial.setdefault(e["trialId"], set()).add(e["epochs"])
    if algorithm == "hyperband":  # each trial trains for the epochs Hyperband gives it
        assert all(len(epochs) == 1 and epochs <= {1, 2, 3} for epochs in per_trial.values())
    meta = json.loads((Path(done["modelPath"]) / "metadata.json").read_text())
    assert meta["lineage"]["search"]["algorithm"] == algorithm
    assert meta["lineage"]["search"]["trial"] == trials[-1]["best"][0]["trialId"]
