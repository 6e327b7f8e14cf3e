"""A search (spec.tuning) on the cluster: the chief + tuner workers Job, status, trial Events."""

from __future__ import annotations

from opfactories import NOW, event_line, k8s_job, pod, training_job

from kerasop.status import KerasTrainingJobStatus
from kerasop_operator import training
from kerasop_operator.training import ObservedTraining, desired_children, training_status

SPACE = {"training.learningRate": {"logUniform": [0.0001, 0.1]}}


def tuned(parallelism: int = 1, **tuning):
    return training_job(
        tuning={"space": SPACE, "maxTrials": 6, "parallelism": parallelism, **tuning}
    )


def env_of(job: dict) -> dict:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_sequential_search_is_one_pod():
    children = desired_children(tuned(), default_image="img")
    spec = children.job["spec"]
    assert spec["completions"] == spec["parallelism"] == 1
    assert "completionMode" not in spec
    assert children.workers_service is None
    assert "KERASTUNER_ORACLE_IP" not in env_of(children.job)


def test_a_parallel_search_is_a_chief_and_tuner_workers_in_one_indexed_job():
    children = desired_children(tuned(parallelism=2), default_image="img")
    spec = children.job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2  # the chief (it tunes too) + 1
    env = env_of(children.job)
    assert env["KERASTUNER_ORACLE_IP"] == "mnist-trainer-0.mnist-workers.ml.svc"
    assert env["KERASTUNER_ORACLE_PORT"] == "8000"
    assert env["KERASOP_TUNER_INDEX"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    assert "KERASOP_NUM_WORKERS" not in env  # each trial trains on one pod
    pod_spec = spec["template"]["spec"]
    assert pod_spec["subdomain"] == "mnist-workers"
    assert pod_spec["containers"][0]["ports"] == [{"name": "oracle", "containerPort": 8000}]
    svc = children.workers_service
    assert svc["spec"]["ports"] == [
        {"name": "oracle", "port": 8000, "targetPort": 8000, "protocol": "TCP"}
    ]


def trial_line(trial_id, status, done, objective=None, message="", best=()):
    fields = {"trialId": trial_id, "status": status, "values": {"training.learningRate": 0.01},
              "metric": "accuracy", "done": done, "total": 6, "best": list(best)}  # fmt: skip
    if objective is not None:
        fields["objective"] = objective
    if message:
        fields["message"] = message
    return event_line("trial", **fields)


BEST = {"trialId": "2", "values": {"training.learningRate": 0.003}, "objective": 0.9712}


def running_status(body, lines):
    st = training_status(
        body,
        ObservedTraining(
            job=k8s_job(active=3),
            pods=[pod(phase="Running", state={"running": {}})],
            log_lines=lines,
        ),
        now=NOW,
    )
    KerasTrainingJobStatus.model_validate(st)  # the shape the CRD accepts
    return st


def test_status_shows_trials_so_far_and_the_best():
    lines = [
        trial_line("0", "completed", 1, 0.8, best=[{**BEST, "trialId": "0", "objective": 0.8}]),
        trial_line("1", "failed", 2, message="loss is nan (the loss diverged)"),
        trial_line("3", "completed", 3, 0.85, best=[BEST, {**BEST, "trialId": "3"}]),
    ]
    st = running_status(tuned(parallelism=2), lines)
    tuning = st["tuning"]
    assert tuning["trials"] == "3/6"  # kubectl get: TRIALS
    assert tuning["best"] == "accuracy 0.9712"  # kubectl get: BEST
    assert tuning["bestTrial"] == {
        "trialId": "2",
        "values": {"training.learningRate": "0.003"},
        "objective": 0.9712,
    }
    assert [t["trialId"] for t in tuning["top"]] == ["2", "3"]
    assert tuning["lastTrial"]["trialId"] == "3" and tuning["lastTrialStatus"] == "completed"


def test_one_event_per_finished_trial():
    body = tuned()
    first = running_status(body, [trial_line("0", "completed", 1, 0.8, best=[BEST])])
    assert training.trial_event({}, first) == (
        "Normal",
        "TrialCompleted",
        "trial 0 completed [1/6]: training.learningRate=0.01 -> accuracy 0.8;"
        " best accuracy 0.9712 (trial 2)",
    )
    assert training.trial_event(first, first) is None  # nothing new
    body["status"] = first
    failed = running_status(
        body, [trial_line("1", "failed", 2, message="loss is nan", best=[BEST])]
    )
    assert failed["tuning"]["best"] == "accuracy 0.9712"  # the best so far
    kind, reason, message = training.trial_event(first, failed)
    assert (kind, reason) == ("Warning", "TrialFailed")
    assert message.endswith(": loss is nan")


def test_tuning_status_survives_a_reconcile_without_the_log():
    body = tuned()
    body["status"] = running_status(body, [trial_line("0", "completed", 1, 0.8, best=[BEST])])
    again = running_status(body, [])
    assert again["tuning"]["trials"] == "1/6"
