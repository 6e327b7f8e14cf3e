"""What `kubectl get ktj` shows: rounded metrics, validation ones where they exist,
and where TensorBoard logs are (status.display, status.tensorboardPath)."""

from __future__ import annotations

from opfactories import LATER, NOW, event_line, k8s_job, pod, terminated, training_job

from kerasop.status import KerasTrainingJobStatus, metrics_display
from kerasop_operator.common import status_patch
from kerasop_operator.training import ObservedTraining, training_status


def status_of(body, **observed):
    st = training_status(body, ObservedTraining(**observed), now=NOW)
    KerasTrainingJobStatus.model_validate(st)  # the shape the CRD accepts
    return st


def test_display_rounds_to_four_digits_and_prefers_validation():
    metrics = {"loss": 0.123456789, "accuracy": 0.9494505524635315,
               "val_loss": 0.2000000476837158, "val_accuracy": 0.93750011920929}  # fmt: skip
    assert metrics_display(metrics, None) == {
        "accuracy": 0.9375,
        "loss": 0.2,
        "measuredOn": "validation",
    }
    assert metrics_display({"loss": 1234.56789, "accuracy": 0.5}, None) == {
        "accuracy": 0.5,
        "loss": 1235.0,
        "measuredOn": "training",
    }
    assert metrics_display({"loss": 0.0000123456}, None)["loss"] == 1.235e-05


def test_display_uses_final_metrics_once_written():
    epoch = {"loss": 0.3, "val_loss": 0.35, "val_accuracy": 0.9}
    final = {"loss": 0.3412345, "accuracy": 0.9123456}
    assert metrics_display(epoch, final) == {
        "accuracy": 0.9123,
        "loss": 0.3412,
        "measuredOn": "validation",
    }
    assert metrics_display({"loss": 0.3}, final)["measuredOn"] == "training"


def test_display_absent_without_accuracy_or_loss():
    assert metrics_display(None, None) is None
    assert metrics_display({"mae": 0.5}, None) is None


def test_running_job_shows_the_epochs_validation_metrics_and_tensorboard_path():
    lines = [
        event_line("start", epochs=10, tensorboardPath="mnist/tensorboard/uid-1"),
        event_line("epoch", epoch=3, epochs=10, metrics={
            "loss": 0.41234567, "accuracy": 0.8512345, "val_loss": 0.5, "val_accuracy": 0.8}),
    ]  # fmt: skip
    st = status_of(
        training_job(),
        job=k8s_job(active=1, ready=1),
        pods=[pod(phase="Running", state={"running": {}})],
        log_lines=lines,
    )
    assert st["display"] == {"accuracy": 0.8, "loss": 0.5, "measuredOn": "validation"}
    assert st["tensorboardPath"] == "mnist/tensorboard/uid-1"


def test_succeeded_job_shows_final_metrics_and_keeps_the_tensorboard_path():
    body = training_job()
    body["status"] = {"phase": "Running", "epoch": 5, "epochs": 5,
                      "metrics": {"loss": 0.2, "val_loss": 0.25},
                      "tensorboardPath": "mnist/tensorboard/uid-1"}  # fmt: skip
    done = event_line("done", modelName="mnist", modelVersion=2,
                      metrics={"loss": 0.2512345, "accuracy": 0.9698765}, epochsRun=5)  # fmt: skip
    job = k8s_job(succeeded=1, completionTime=LATER,
                  conditions=[{"type": "Complete", "status": "True"}])  # fmt: skip
    st = status_of(
        body, job=job, pods=[pod(phase="Succeeded", state=terminated(0, done, "Completed"))]
    )
    assert st["display"] == {"accuracy": 0.9699, "loss": 0.2512, "measuredOn": "validation"}
    assert st["tensorboardPath"] == "mnist/tensorboard/uid-1"


def test_status_patch_deletes_stale_nested_keys():
    old = {"display": {"loss": 0.5, "measuredOn": "training"}, "phase": "Running"}
    new = {"display": {"accuracy": 0.9, "measuredOn": "training"}, "phase": "Running"}
    assert status_patch(old, new) == {
        "display": {"accuracy": 0.9, "measuredOn": "training", "loss": None}
    }
    assert status_patch(new, new) == {}
