"""Scenario t (file order: after g_rollout, before h, which uninstalls): a hyperparameter
search (spec.tuning, docs/tuning.md) on a real cluster.

t1 a 6-trial search with parallelism 2 runs as one Indexed Job of 2 pods (keras-tuner's
   chief, which runs trials too, and a tuner worker); the worker pod is deleted in the middle of a trial: the
   Job's replacement pod has the same index, so the same tuner id, gets that trial back
   from the oracle and resumes it from its checkpoint (the search does not start over);
   status shows TRIALS 6/6 and BEST, and there is an Event per finished trial;
t2 the best trial is published as version 1 with lineage naming the search and the trial,
   and a KerasModelService with a gate serves it.
"""

from __future__ import annotations

import json

import pytest
from conftest import E2E, new_job
from e2ekit import LABEL_TRAINING_JOB, LogFollower, events_in, runtime_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

NAME = "dense-tuning"
TRIALS = 6
EPOCHS = 6  # slow enough (small batches) that a trial can be interrupted at epoch 2
GATE = {"min": {"val_accuracy": 0.6}}


def search_job() -> dict:
    doc = new_job(NAME, epochs=EPOCHS, batch_size=4)
    spec = doc["spec"]
    spec["data"]["validationSplit"] = 0.2
    spec["training"]["checkpointIntervalSeconds"] = 0  # every epoch: the resume is exact
    spec["tuning"] = {
        "space": {
            "training.learningRate": {"logUniform": [0.0001, 0.05]},
            "model.layers[0].units": {"choice": [4, 8, 16]},
        },
        "objective": {"metric": "val_accuracy"},
        "algorithm": "random",
        "maxTrials": TRIALS,
        "parallelism": 2,
        "seed": 7,
    }
    return doc


def _pods(e2e: E2E) -> list[dict]:
    return e2e.kubectl.list("pods", e2e.namespace, f"{LABEL_TRAINING_JOB}={NAME}")


def _index(pod: dict) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(
        "batch.kubernetes.io/job-completion-index"
    )


def _running_worker(e2e: E2E, index: str, exclude: frozenset[str] = frozenset()) -> dict:
    def probe():
        for pod in _pods(e2e):
            statuses = pod["status"].get("containerStatuses") or []
            if (
                _index(pod) == index
                and pod["metadata"]["name"] not in exclude
                and statuses
                and "running" in (statuses[0].get("state") or {})
            ):
                return pod
        return None

    return wait_for(f"tuner pod {index} of {NAME} running", probe, timeout=900, interval=1,
                    diagnose=e2e.job_diagnose(NAME))  # fmt: skip


def test_t1_a_parallel_search_survives_a_killed_trial_pod(data: E2E, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(search_job(), ns)
    k8s_job = wait_for(
        f"{NAME}-trainer Job", lambda: k.get("job.batch", f"{NAME}-trainer", ns), timeout=300
    )
    assert k8s_job["spec"]["completionMode"] == "Indexed"
    assert k8s_job["spec"]["parallelism"] == k8s_job["spec"]["completions"] == 2
    phase("search Job created (the chief and a tuner, both running trials)")

    victim = _running_worker(e2e, "1")
    follower = LogFollower(k, victim["metadata"]["name"], ns, container="trainer")

    def trial_at_epoch_2():
        epochs = [e for e in events_in(follower.text(), "epoch") if e.get("epoch", 0) >= 2]
        return epochs[-1] if epochs else None

    caught = wait_for(f"a trial at epoch 2 on {victim['metadata']['name']}", trial_at_epoch_2,
                      timeout=900, interval=0.5, diagnose=e2e.job_diagnose(NAME))  # fmt: skip
    trial = caught["trialId"]
    k.delete("pod", victim["metadata"]["name"], ns)
    before = follower.finish(timeout=120)
    last = max(e["epoch"] for e in events_in(before, "epoch") if e.get("trialId") == trial)
    assert last < EPOCHS, "the trial finished before the pod was deleted: nothing to resume"
    phase(f"tuner pod 1 deleted during trial {trial} (epoch {last})")

    replacement = _running_worker(e2e, "1", exclude=frozenset({victim["metadata"]["name"]}))
    done = e2e.wait_job_phase(NAME, "Succeeded", timeout=1800)
    phase("search Succeeded")
    log = k.logs(replacement["metadata"]["name"], ns, container="trainer")
    starts = [e for e in events_in(log, "start") if e.get("trialId") == trial]
    assert starts, f"the replacement pod did not get trial {trial} back:\n{log[-3000:]}"
    assert last <= starts[0]["resumedFromEpoch"] <= last + 1, (starts[0], last)

    st = done["status"]
    tuning = st["tuning"]
    assert tuning["trials"] == f"{TRIALS}/{TRIALS}", tuning
    assert tuning["best"].startswith("accuracy "), tuning
    assert 1 <= len(tuning["top"]) <= 5
    assert tuning["bestTrial"]["trialId"] == tuning["top"][0]["trialId"]
    table = k.run("get", "ktj", NAME, "-n", ns).stdout.splitlines()
    assert "TRIALS" in table[0] and "BEST" in table[0] and f"{TRIALS}/{TRIALS}" in table[1], table
    reasons = k.run(
        "get", "events", "-n", ns, "--field-selector",
        f"involvedObject.kind=KerasTrainingJob,involvedObject.name={NAME}",
        "-o", "jsonpath={range .items[*]}{.reason}{'\\n'}{end}",
    ).stdout.split()  # fmt: skip
    assert any(r in ("TrialCompleted", "TrialFailed") for r in reasons), reasons
    phase.note(f"trial {trial} resumed from epoch {starts[0]['resumedFromEpoch']}")


def test_t2_the_best_trial_is_a_version_served_behind_a_gate(data: E2E, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    st = e2e.job(NAME)["status"]
    assert st["modelVersion"] == 1, st
    # The version's metadata.json, read from a pod that mounts the search's model store.
    log = e2e.run_pod(
        runtime_pod(
            "e2e-tuning-metadata",
            e2e.runtime_image,
            ["cat", f"/models/{NAME}/1/metadata.json"],
            claims={"/models": (f"{NAME}-models", True)},
        )
    )
    lineage = json.loads(log[log.index("{") :])["lineage"]
    best = st["tuning"]["bestTrial"]
    assert lineage["search"]["job"] == NAME and lineage["search"]["trial"] == best["trialId"]
    assert {k: str(v) for k, v in lineage["search"]["hyperparameters"].items()} == best["values"]
    phase("version 1 is the best trial (lineage)")

    k.apply(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": NAME},
            "spec": {"model": {"trainingJob": NAME}, "rollout": {"gate": GATE}},
        },
        ns,
    )
    svc = e2e.wait_service_ready(NAME, version=1, timeout=900)
    assert svc["status"]["servingVersion"] == 1, svc["status"]
    phase("the gate passed: the best trial's version is served")
