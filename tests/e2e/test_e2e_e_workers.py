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
from conftest import E2E, check_workers_trained_one_model, new_job

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

    shards, total = check_workers_trained_one_model(e2e, NAME, EPOCHS)
    phase.note(f"worker shards {shards} of {total} training rows")
    phase("both workers' logs checked")
