"""training.tensorboard: real Keras TensorBoard logs on the model volume, opened by
`kerasop tensorboard` (a real TensorBoard server answering over HTTP)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trainerkit import Events, free_port, make_job

from kerasop_trainer.train import run

CSV = {"format": "csv", "path": "small.csv", "labelColumn": "label", "validationSplit": 0.25}


def test_tensorboard_logs_land_beside_the_versions_and_are_announced(data_root, store):
    job = make_job("tb", CSV, training={"epochs": 3, "tensorboard": True})
    emit = Events()
    run(job, data_root, store, job_id="uid-1", emit=emit)
    start = emit.of("start")[0]
    assert start["tensorboardPath"] == "tb/tensorboard/uid-1"
    logs = store / "tb" / "tensorboard" / "uid-1"
    for run_name, tag in (("train", "epoch_loss"), ("validation", "epoch_loss")):
        acc = EventAccumulator(str(logs / run_name), size_guidance={"tensors": 0})
        acc.Reload()
        assert tag in acc.Tags()["tensors"], acc.Tags()
        assert [e.step for e in acc.Tensors(tag)] == [0, 1, 2]
    assert sorted(p.name for p in (store / "tb").iterdir()) == ["1", "tensorboard"]


def test_no_tensorboard_logs_unless_asked(data_root, store):
    emit = Events()
    run(make_job("plain", CSV, training={"epochs": 1}), data_root, store, job_id="u", emit=emit)
    assert "tensorboardPath" not in emit.of("start")[0]
    assert not (store / "plain" / "tensorboard").exists()


def test_kerasop_tensorboard_serves_the_jobs_runs(data_root, store, tmp_path):
    job = make_job("tbcli", CSV, training={"epochs": 1, "tensorboard": True})
    run(job, data_root, store, job_id="local-tbcli", emit=Events())
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.model_dump_json(by_alias=True, exclude_none=True))
    port = free_port()
    kerasop = Path(sys.executable).parent / "kerasop"
    argv = [str(kerasop), "tensorboard", "-f", str(job_file), "--store", str(store)]
    proc = subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "TensorBoard on" in proc.stdout.readline()
        deadline, runs = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as r:
                    runs = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert runs is not None, "TensorBoard did not answer"
        assert "local-tbcli/train" in runs and "local-tbcli/validation" in runs
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_kerasop_tensorboard_without_logs_says_how_to_get_them(store, tmp_path):
    job = make_job("nolog", CSV)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.model_dump_json(by_alias=True, exclude_none=True))
    kerasop = Path(sys.executable).parent / "kerasop"
    result = subprocess.run(
        [str(kerasop), "tensorboard", "-f", str(job_file), "--store", str(store)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "training.tensorboard: true" in result.stderr
