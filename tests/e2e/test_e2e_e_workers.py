"""Scenario e: data-parallel training with two workers.

A job with ``workers: 2`` runs an Indexed Job of two trainer pods (JAX backend, each on
its own shard). Both pods must demonstrably take part: each one's log has the trainer's
start event with its own worker index and a shard of about half the rows, and both
report epochs; the status counts two workers. And they train one model together, not two
models side by side: both end with the same (globally reduced) validation metrics, and
only worker 0 publishes the version.
"""

from __future__ import annotations

import json

import pytest
from conftest import E2E, new_job
from e2ekit import LABEL_TRAINING_JOB, events_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NAME = "dense-workers"
EPOCHS = 2


def test_e_two_workers_both_train(data: E2E, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(new_job(NAME, epochs=EPOCHS, batch_size=32, workers=2), ns)
    done = e2e.wait_job_phase(NAME, "Succeeded", timeout=1200)
    phase("2-worker job Succeeded")
    st = done["status"]
    shown = json.dumps(st, indent=1)
    assert st.get("workers", {}).get("desired") == 2, shown
    assert st["workers"].get("succeeded") == 2, shown
    assert st.get("modelVersion") == 1, shown

    job = k.get("job.batch", f"{NAME}-trainer", ns)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2, job[
        "spec"
    ]
    headless = k.get("service", f"{NAME}-workers", ns)
    assert headless is not None and headless["spec"]["clusterIP"] == "None", headless

    pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}={NAME}")
    by_index: dict[int, list[dict]] = {}
    for pod in pods:
        index = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        by_index.setdefault(index, []).append(pod)
    assert sorted(by_index) == [0, 1], [p["metadata"]["name"] for p in pods]

    starts, dones = {}, {}
    for index, group in by_index.items():
        pod = group[-1]
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        log = k.logs(pod["metadata"]["name"], ns, container="trainer")
        start = events_in(log, "start")
        assert start, f"worker {index}: no start event in its log:\n{log[-3000:]}"
        start = start[-1]
        assert start["workers"] == 2 and start["workerIndex"] == index, start
        assert start["backend"] == "jax", start
        epochs = [e["epoch"] for e in events_in(log, "epoch")]
        assert epochs and max(epochs) == EPOCHS, f"worker {index} epochs {epochs}:\n{log[-3000:]}"
        starts[index] = start
        done_events = events_in(log, "done")
        assert done_events, f"worker {index}: no done event in its log:\n{log[-3000:]}"
        dones[index] = done_events[-1]
    shards = [starts[i]["shardSize"] for i in (0, 1)]
    total = starts[0]["trainRows"]
    assert all(s > 0 for s in shards) and sum(shards) <= total, (shards, total)
    assert all(abs(s - total / 2) <= 1 for s in shards), f"uneven shards {shards} of {total}"
    assert dones[0]["metrics"] == dones[1]["metrics"], f"two models, not one: {dones}"
    assert dones[0]["modelVersion"] == 1 and dones[1].get("modelVersion") is None, dones
    phase.note(f"worker shards {shards} of {total} training rows, backend {starts[0]['backend']}")
    phase("both workers' logs checked")
