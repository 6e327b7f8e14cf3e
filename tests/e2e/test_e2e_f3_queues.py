"""Scenario f3: shared quota with Kueue (docs/queues.md).

cluster/kind/up.sh installs Kueue v0.17.0 (built from its Go module) and the suite installs
the chart with ``kueue.enabled=true``. A ClusterQueue has CPU quota for one job (500m); a
LocalQueue in the test namespace points at it.

- Two one-worker jobs (500m each) in the queue: the first is admitted and runs; the second is
  ``Queued`` with Kueue's reason ("insufficient quota") and starts only after the first
  finished; both succeed, each admitted with the queue's flavor.
- A two-worker job (2 x 500m) under the quota for one worker is never started half: its Job
  stays suspended and no trainer pod exists while it waits.
- Preemption (the ClusterQueue preempts lower priorities): a high-priority job arrives while
  a low-priority one trains; the low one is ``Preempted`` (the message names the Job that
  preempted it), its trainer saves a checkpoint between two batches on SIGTERM, and on
  readmission it resumes at that batch: its status epoch never goes back and the trainer's
  step counts (``checkpoint`` event of the first pod, ``start`` event of the second) say how
  many batches were trained twice (none).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import E2E, new_job
from e2ekit import LABEL_TRAINING_JOB, LogFollower, condition, events_in, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

FLAVOR = "kerasop-e2e-flavor"
CLUSTER_QUEUE = "kerasop-e2e-queue"
QUEUE = "e2e-queue"
CPU = "500m"
PRIORITIES = {"e2e-low": 100, "e2e-high": 1000}  # Kueue WorkloadPriorityClasses
# Kueue says "insufficient quota" when a job asks for more than the queue has, and
# "insufficient unused quota" while another job holds it.
NO_QUOTA = re.compile(r"insufficient (unused )?quota")


@pytest.fixture(scope="module")
def queues(data: E2E) -> Iterator[E2E]:
    """A flavor, a ClusterQueue with quota for one 500m pod, and a LocalQueue in the namespace."""
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(
        [
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ResourceFlavor",
                "metadata": {"name": FLAVOR},
            },
            *(
                {
                    "apiVersion": "kueue.x-k8s.io/v1beta2",
                    "kind": "WorkloadPriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                }
                for name, value in PRIORITIES.items()
            ),
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ClusterQueue",
                "metadata": {"name": CLUSTER_QUEUE},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                    "preemption": {"withinClusterQueue": "LowerPriority"},
                    "resourceGroups": [
                        {
                            "coveredResources": ["cpu"],
                            "flavors": [
                                {
                                    "name": FLAVOR,
                                    "resources": [{"name": "cpu", "nominalQuota": CPU}],
                                }
                            ],
                        }
                    ],
                },
            },
        ]
    )
    k.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE},
            "spec": {"clusterQueue": CLUSTER_QUEUE},
        },
        ns,
    )
    wait_for(
        "ClusterQueue active",
        lambda: condition(k.get("clusterqueue", CLUSTER_QUEUE), "Active").get("status") == "True",
        timeout=60,
        interval=2,
    )
    yield e2e
    if not e2e.keep:
        for name in ("gang", "queued-1", "queued-2", "preempted", "urgent"):
            k.delete("kerastrainingjob", name, ns, wait=True, timeout=180)
        k.delete("localqueue", QUEUE, ns, wait=True)
        k.delete("clusterqueue", CLUSTER_QUEUE, wait=True)
        k.delete("resourceflavor", FLAVOR, wait=True)
        for name in PRIORITIES:
            k.delete("workloadpriorityclass", name, wait=True)


def queued_job(
    name: str, workers: int = 1, epochs: int = 1, batch_size: int = 32, **spec: Any
) -> dict[str, Any]:
    return new_job(
        name,
        epochs=epochs,
        batch_size=batch_size,
        queueName=QUEUE,
        workers=workers,
        resources={"cpu": CPU},
        **spec,
    )


def test_f3_second_job_waits_for_the_quota(queues: E2E, phase) -> None:
    e2e = queues
    k, ns = e2e.kubectl, e2e.namespace
    # Slow enough (small batches) to still hold the quota when the second job is created.
    k.apply(queued_job("queued-1", epochs=10, batch_size=2), ns)
    first = wait_for(
        "queued-1 admitted",
        lambda: (
            (j := e2e.job("queued-1")) and condition(j, "Admitted").get("status") == "True" and j
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("queued-1"),
    )
    assert first["status"]["queue"]["flavors"] == {"cpu": FLAVOR}, json.dumps(first["status"])
    assert first["status"]["queue"]["clusterQueue"] == CLUSTER_QUEUE
    phase("first job admitted")

    k.apply(queued_job("queued-2"), ns)
    second = wait_for(
        "queued-2 Queued with Kueue's reason",
        lambda: (
            (j := e2e.job("queued-2"))
            and (j.get("status") or {}).get("phase") == "Queued"
            and NO_QUOTA.search(condition(j, "Admitted").get("message", ""))
            and j
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("queued-2"),
    )
    assert condition(second, "Admitted")["reason"] == "Queued"
    assert k.get("job.batch", "queued-2-trainer", ns)["spec"]["suspend"] is True
    assert not k.list("pods", ns, f"{LABEL_TRAINING_JOB}=queued-2")
    phase("second job Queued: insufficient quota")

    done1 = e2e.wait_job_phase("queued-1", "Succeeded", timeout=900)
    done2 = e2e.wait_job_phase("queued-2", "Succeeded", timeout=900)
    phase("both Succeeded, one after the other")
    started2 = k.get("job.batch", "queued-2-trainer", ns)["status"]["startTime"]
    assert started2 >= done1["status"]["completionTime"], (started2, done1["status"])
    assert condition(done2, "Admitted")["status"] == "True"
    events = k.list("events", ns)
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "queued-2"}
    assert {"Queued", "Admitted"} <= reasons, reasons


def test_f3_two_workers_are_never_started_half(queues: E2E, phase) -> None:
    """Quota for one worker: the two-worker job waits whole, no worker starts alone."""
    e2e = queues
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(queued_job("gang", workers=2), ns)
    wait_for(
        "gang Queued with Kueue's reason",
        lambda: (
            (j := e2e.job("gang"))
            and (j.get("status") or {}).get("phase") == "Queued"
            and NO_QUOTA.search(condition(j, "Admitted").get("message", ""))
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("gang"),
    )
    phase("two-worker job Queued")
    # Kueue admits within seconds when it can (the other f3 jobs): 30 s without a start is
    # the no-half-start evidence. The queue is otherwise empty: nothing else holds quota.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = k.get("job.batch", "gang-trainer", ns)
        assert job["spec"]["suspend"] is True, job["spec"]
        pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}=gang")
        assert not pods, [p["metadata"]["name"] for p in pods]
        time.sleep(5)
    assert e2e.job("gang")["status"]["phase"] == "Queued"
    phase("no worker started in 30 s")


def test_f3_preempted_job_resumes_at_its_batch(queues: E2E, phase) -> None:
    e2e = queues
    k, ns = e2e.kubectl, e2e.namespace
    selector = f"{LABEL_TRAINING_JOB}=preempted"
    # ~1,000 batches an epoch: the preemption lands inside one.
    k.apply(queued_job("preempted", epochs=6, batch_size=2, priorityClassName="e2e-low"), ns)
    epochs_seen: list[int] = []
    stop_watch = threading.Event()

    def watch_epochs() -> None:  # status.epoch, as a user's `kubectl get -w` sees it
        while not stop_watch.is_set():
            epoch = ((e2e.job("preempted") or {}).get("status") or {}).get("epoch")
            if epoch is not None and (not epochs_seen or epochs_seen[-1] != epoch):
                epochs_seen.append(epoch)
            time.sleep(1)

    watcher = threading.Thread(target=watch_epochs, daemon=True)
    watcher.start()
    try:
        first_pod = wait_for(
            "the low-priority trainer running",
            lambda: next(
                (
                    p["metadata"]["name"]
                    for p in k.list("pods", ns, selector)
                    if (p.get("status") or {}).get("phase") == "Running"
                ),
                None,
            ),
            timeout=300,
            interval=2,
            diagnose=e2e.job_diagnose("preempted"),
        )
        first_log = LogFollower(k, first_pod, ns)
        wait_for(
            "an epoch done",
            lambda: ((e2e.job("preempted") or {}).get("status") or {}).get("epoch", 0) >= 1,
            timeout=300,
            interval=2,
            diagnose=e2e.job_diagnose("preempted"),
        )
        phase("low-priority job training")

        k.apply(queued_job("urgent", priorityClassName="e2e-high"), ns)
        preempted = wait_for(
            "preempted Preempted",
            lambda: (
                (j := e2e.job("preempted"))
                and (j.get("status") or {}).get("phase") == "Preempted"
                and j
            ),
            timeout=180,
            interval=1,
            diagnose=e2e.job_diagnose("preempted"),
        )
        urgent_job_uid = k.get("job.batch", "urgent-trainer", ns)["metadata"]["uid"]
        admitted = condition(preempted, "Admitted")
        assert admitted["reason"] == "Preempted", admitted
        assert urgent_job_uid in admitted["message"], (urgent_job_uid, admitted)  # who preempted
        first_text = first_log.finish(timeout=120)
        saved = events_in(first_text, "checkpoint")
        failed = events_in(first_text, "failed")
        assert len(saved) == 1 and failed and failed[-1]["reason"] == "Terminated", first_text[
            -3000:
        ]
        phase(f"preempted: checkpoint at epoch {saved[0]['epoch']}, step {saved[0]['step']}")

        e2e.wait_job_phase("urgent", "Succeeded", timeout=600)
        done = e2e.wait_job_phase("preempted", "Succeeded", timeout=900)
        phase("urgent job done, the preempted one resumed and finished")
    finally:
        stop_watch.set()
        watcher.join(timeout=10)

    pods = [p["metadata"]["name"] for p in k.list("pods", ns, selector)]
    resumed = [
        start for pod in pods if pod != first_pod for start in events_in(k.logs(pod, ns), "start")
    ]
    assert len(resumed) == 1, (pods, resumed)
    start = resumed[0]
    point = (start["resumedFromEpoch"], start["resumedFromStep"])
    assert point == (saved[0]["epoch"], saved[0]["step"]), (start, saved)
    repeated = saved[0]["stepsDone"] - start["stepsDone"]
    assert repeated == 0, (start, saved)  # the trainer's own step counts: no batch twice
    assert epochs_seen == sorted(epochs_seen), epochs_seen  # never back
    assert done["status"]["epoch"] == 6
    reasons = [
        e["reason"] for e in k.list("events", ns) if e["involvedObject"].get("name") == "preempted"
    ]
    assert "Preempted" in reasons, reasons
    phase(f"{repeated} batches trained twice; status epochs seen {epochs_seen}")
