"""Training progress gauges the operator exports (the dashboard's training panels, the
KerasTrainingJobFailed alert), read back from the operator's real Prometheus registry."""

from __future__ import annotations

from prometheus_client import REGISTRY

from kerasop_operator import metrics


def value(metric_name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric_name, labels)


def job(name: str, **status) -> dict:
    return {"metadata": {"namespace": "ml", "name": name}, "status": status}


def test_gauges_follow_the_jobs_status():
    metrics.observe_training_job(
        job("g1", phase="Running", epoch=3, epochs=10, metrics={"loss": 0.5, "val_loss": 0.6})
    )
    key = {"namespace": "ml", "name": "g1"}
    assert value("kerasop_training_job_epoch", **key) == 3
    assert value("kerasop_training_job_epochs", **key) == 10
    assert value("kerasop_training_job_metric", **key, metric="val_loss") == 0.6
    assert value("kerasop_training_job_phase", **key, phase="Running") == 1
    assert value("kerasop_training_job_phase", **key, phase="Failed") == 0


def test_a_metric_the_job_stops_reporting_goes_away_and_deletion_clears_all():
    metrics.observe_training_job(job("g2", phase="Running", metrics={"loss": 0.5, "mae": 1.0}))
    metrics.observe_training_job(job("g2", phase="Failed", metrics={"loss": 0.4}))
    key = {"namespace": "ml", "name": "g2"}
    assert value("kerasop_training_job_metric", **key, metric="mae") is None
    assert value("kerasop_training_job_metric", **key, metric="loss") == 0.4
    assert value("kerasop_training_job_phase", **key, phase="Failed") == 1
    metrics.observe_training_job(job("g2"), deleted=True)
    assert value("kerasop_training_job_phase", **key, phase="Failed") is None
    assert value("kerasop_training_job_metric", **key, metric="loss") is None


def test_other_jobs_keep_their_series():
    metrics.observe_training_job(job("g3", phase="Succeeded", epoch=5, epochs=5))
    metrics.observe_training_job(job("g4", phase="Running"), deleted=True)
    assert value("kerasop_training_job_epoch", namespace="ml", name="g3") == 5
