"""The CLI's terminal output: quiet start-up, progress, readable predictions.

The subprocess tests run `kerasop train` through its installed entry point on real data.
"""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasop_cli import console
from kerasop_server.config import ServerConfig
from kerasop_server.runner import BackgroundServer
from kerasop_trainer import sample_data

KERASOP = Path(sys.executable).parent / "kerasop"
JOB = """
apiVersion: kerasop.io/v1alpha1
kind: KerasTrainingJob
metadata: {name: quiet}
spec:
  data: {format: csv, path: dense/train.csv, labelColumn: label, validationSplit: 0.2}
  model: {layers: [{type: Dense, units: 4, activation: relu}, {type: Dense, units: 1, activation: sigmoid}]}
  training: {loss: binary_crossentropy, epochs: 2, batchSize: 64, seed: 1}
---
apiVersion: kerasop.io/v1alpha1
kind: KerasModelService
metadata: {name: quiet}
spec: {model: {trainingJob: quiet}}
"""


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    sample_data.write_dense_csv(root / "data" / "dense" / "train.csv", rows=300)
    (root / "job.yaml").write_text(JOB)
    return root


def train(root: Path, *extra: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG_", "GRPC_"))}
    env.update(env_extra)
    return subprocess.run(
        [str(KERASOP), "train", "-f", str(root / "job.yaml"), "--data-dir", str(root / "data"),
         "--store", str(root / "models"), *extra],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def noise_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if console.is_noise(ln.encode())]


@pytest.fixture(scope="module")
def trained(job_file):
    # TensorFlow at its most talkative: the quiet default must still filter all of it.
    return train(job_file, TF_CPP_MIN_LOG_LEVEL="0")


def test_train_is_quiet_by_default_and_prints_one_line_per_epoch(trained):
    result = trained
    assert result.returncode == 0, result.stderr
    assert noise_lines(result.stderr) == []
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr
    epochs = [ln for ln in result.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epochs] == ["1/2", "2/2"]
    assert "\r" not in result.stdout and "\x1b" not in result.stdout  # no bar off a terminal
    assert "saved quiet version" in result.stdout


def test_verbose_shows_tensorflows_start_up_logs(job_file):
    # What TensorFlow prints at its default level changes between releases (2.21 prints no
    # start-up line here); at level 0 it always logs, and --verbose must let that through.
    result = train(job_file, "--verbose", TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0, result.stderr
    assert noise_lines(result.stderr), result.stderr


def test_predict_prints_class_and_probability_after_the_json(job_file, trained):
    assert trained.returncode == 0, trained.stderr
    config = ServerConfig(store_root=str(job_file / "models"), model="quiet", port=0)
    with BackgroundServer(config) as server:
        result = subprocess.run(
            [str(KERASOP), "predict", "-f", str(job_file / "job.yaml"), "--url", server.url,
             "--csv", str(job_file / "data" / "dense" / "train.csv"), "--rows", "2"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer, *readable = result.stdout.splitlines()
    assert len(json.loads(answer)["predictions"]) == 2
    assert len(readable) == 2
    assert all(
        re.fullmatch(r"row \d: [01] \(probability (0\.[5-9]\d\d|1\.000)\)", ln) for ln in readable
    )


def test_noise_filter_keeps_errors_and_our_own_lines():
    noise = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1795977543.025552   15790 port.cc:153] oneDNN custom operations are on.",
        b"W0000 00:00:1795977543.025552   15790 cuda_dnn.cc:8310] Unable to register cuDNN factory",
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow",
    ]
    kept = [
        b"E0000 00:00:1795977543.025552   15790 kernel.cc:1] a real error",
        b"Traceback (most recent call last):",
        b"kerasop-train: note: no validation data",
        b"error: cannot read job.yaml",
    ]
    assert all(console.is_noise(line) for line in noise)
    assert not any(console.is_noise(line) for line in kept)


def test_progress_bar_on_a_terminal_shows_steps_eta_and_loss():
    out = io.StringIO()
    display = console.TrainingDisplay(stream=out, force_terminal=True)
    assert display.live
    for step in range(1, 11):
        display.batch(1, 3, step, 10, 1.0 / step)
    time.sleep(0.3)  # the bar redraws 10 times a second
    display.line("epoch 1/3  loss=0.1000")
    display.batch(2, 3, 4, 10, 0.25)
    time.sleep(0.3)
    display.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # drop colours, cursor moves
    assert "epoch 1/3" in text and "10/10" in text and "ETA" in text and "loss 0.1000" in text
    assert "epoch 2/3" in text and "4/10" in text and "loss 0.2500" in text
    assert "epoch 1/3  loss=0.1000" in text


def test_off_a_terminal_there_is_no_bar():
    assert not console.TrainingDisplay(stream=io.StringIO()).live


def test_predictions_read_as_class_and_probability():
    binary = {"kind": "binary", "classNames": ["no", "yes"]}
    assert console.describe_predictions([[0.9], [0.2]], binary) == [
        "row 1: yes (probability 0.900)",
        "row 2: no (probability 0.800)",
    ]
    multi = {"kind": "multiclass", "classNames": ["cat", "dog", "fox"]}
    assert console.describe_predictions([[0.1, 0.2, 0.7]], multi) == [
        "row 1: fox (probability 0.700)"
    ]
    assert console.describe_predictions([[0.3, 0.7]], {"kind": "multiclass"}) == [
        "row 1: class 1 (probability 0.700)"
    ]
    assert console.describe_predictions([[3.25]], {"kind": "regression"}) == ["row 1: 3.25"]


def test_train_runs_a_search_and_prints_one_line_per_trial(tmp_path):
    """`kerasop train -f` on a job with spec.tuning: the trials one after the other, then
    the best one published (examples/tuning.yaml, shrunk to 2 trials of 1 epoch)."""
    import yaml

    example = Path(__file__).resolve().parents[2] / "examples" / "tuning.yaml"
    job, service = yaml.safe_load_all(example.read_text())
    job["spec"]["training"]["epochs"] = 1
    job["spec"]["tuning"].update(maxTrials=2, algorithm="random")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump_all([job, service]))
    sample_data.write_dense_csv(tmp_path / "data" / "dense" / "train.csv", rows=200, features=16)
    result = train(tmp_path)
    assert result.returncode == 0, result.stderr
    trials = [
        ln for ln in result.stdout.splitlines() if re.match(r"trial \d+ (completed|failed)", ln)
    ]
    assert len(trials) == 2, result.stdout
    assert "[2/2]" in trials[-1] and "-> accuracy" in trials[-1] and "best: trial" in trials[-1]
    assert re.search(r"trial \d+: epoch 1/1", result.stdout)
    assert "saved dense-tuning version 1" in result.stdout


def test_processes_are_for_a_search(job_file):
    result = train(job_file, "--processes", "2")
    assert result.returncode != 0
    assert "--processes runs a search: the job has no spec.tuning" in result.stderr
