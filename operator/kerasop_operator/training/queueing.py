"""Kueue: the trainer Job's Workload -> where the job stands in its queue (pure).

Kueue (docs/queues.md) manages a batch/v1 Job labelled ``kueue.x-k8s.io/queue-name``: it
makes a Workload owned by the Job (labelled ``kueue.x-k8s.io/job-uid``), reserves quota in
a ClusterQueue for all of the Job's pods at once, then unsuspends the Job (admission); to
preempt it, it suspends the Job again and requeues the Workload. The operator reads the
Workload (only with its Kueue support on: ``Config.kueue``) and says in the job's status
what Kueue decided, in Kueue's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..conditions import Cond

WORKLOAD_GROUP = "kueue.x-k8s.io"
WORKLOAD_VERSION = "v1beta2"  # Kueue v0.17 stores v1beta2 (v1beta1 is deprecated)
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
# Set on a Workload the operator deactivated for spec.suspend, so that it reactivates only
# those (a Workload Kueue itself deactivated, e.g. after too many requeues, stays so).
ANN_DEACTIVATED = "kerasop.io/deactivated-for-suspend"
# How long a queued Job may go without a Workload before the job says no Kueue serves it.
WORKLOAD_WAIT_SECONDS = 60

Stage = Literal[
    "WaitingForWorkload",
    "Queued",
    "Admitted",
    "Preempted",
    "Deactivated",
    "QueueNotServed",
    "Finished",
]


@dataclass(frozen=True)
class ObservedQueue:
    """What the operator knows of a queued job's Workload."""

    name: str  # the LocalQueue
    support: bool  # the operator's Kueue support is on (it may read Workloads)
    served: bool = True  # the API server serves workloads.kueue.x-k8s.io
    workload: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueState:
    stage: Stage
    message: str
    cluster_queue: str | None = None
    flavors: dict[str, str] = field(default_factory=dict)
    workload: str | None = None

    @property
    def phase(self) -> Literal["Queued", "Preempted"] | None:
        """The job's phase while not admitted (None: the Job and its pods say).

        Waiting for its Workload (or for a Kueue that never comes) a job stays Pending, the
        phase the periodic refresh follows: it turns QueueNotServed after a while.
        """
        if self.stage in ("Queued", "Deactivated"):
            return "Queued"
        if self.stage == "Preempted":
            return "Preempted"
        return None

    def condition(self) -> Cond:
        """The ``Admitted`` condition: True once Kueue admitted the Job."""
        return Cond.of("Admitted", self.stage == "Admitted", self.stage, self.message)


def _true(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c["type"]: c
        for c in (workload.get("status") or {}).get("conditions") or []
        if isinstance(c, dict) and c.get("type") and c.get("status") == "True"
    }


def _condition(workload: dict[str, Any], type: str) -> dict[str, Any]:
    for c in (workload.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type:
            return c
    return {}


def admission_flavors(workload: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """The ClusterQueue and the flavor of each resource Kueue assigned (all pod sets)."""
    admission = (workload.get("status") or {}).get("admission") or {}
    flavors: dict[str, str] = {}
    for assignment in admission.get("podSetAssignments") or []:
        flavors.update({str(k): str(v) for k, v in (assignment.get("flavors") or {}).items()})
    return admission.get("clusterQueue"), flavors


def _seconds_since(stamp: str | None, now: str) -> float:
    if not stamp:
        return 0.0
    return (datetime.fromisoformat(now) - datetime.fromisoformat(stamp)).total_seconds()


def queue_state(observed: ObservedQueue, job: dict[str, Any], *, now: str) -> QueueState:
    """Where the queued trainer ``job`` stands, from its Workload (``observed.workload``)."""
    q = observed.name
    jname = (job.get("metadata") or {}).get("name", "")
    suspended = bool((job.get("spec") or {}).get("suspend"))
    if not observed.support:
        if suspended:
            return QueueState(
                "Queued",
                f"waiting for Kueue to admit Job {jname} from LocalQueue {q} (the operator's"
                " Kueue support is off, chart value kueue.enabled: it cannot say more)",
            )
        return QueueState("Admitted", f"Kueue started Job {jname} (LocalQueue {q})")
    if not observed.served:
        return QueueState(
            "QueueNotServed",
            f"no Kueue serves LocalQueue {q}: the API server does not serve"
            f" workloads.{WORKLOAD_GROUP} (install Kueue, or remove queueName)",
        )
    wl = observed.workload
    if wl is None:
        waited = _seconds_since((job.get("metadata") or {}).get("creationTimestamp"), now)
        if waited >= WORKLOAD_WAIT_SECONDS:
            return QueueState(
                "QueueNotServed",
                f"Kueue made no Workload for Job {jname} in {int(waited)}s: is Kueue running"
                " and managing batch/v1 Jobs?",
            )
        return QueueState(
            "WaitingForWorkload", f"waiting for Kueue to take Job {jname} into LocalQueue {q}"
        )

    name = (wl.get("metadata") or {}).get("name")
    cluster_queue, flavors = admission_flavors(wl)
    true = _true(wl)
    finished = true.get("Finished")
    if finished:  # the Job's own conditions say how it ended
        return QueueState(
            "Admitted" if "Admitted" in true else "Finished",
            f"Workload {name} finished: {finished.get('message') or finished.get('reason')}",
            cluster_queue,
            flavors,
            name,
        )
    evicted = true.get("Evicted")
    if (wl.get("spec") or {}).get("active") is False or (
        evicted and evicted.get("reason") in ("Deactivated", "InactiveWorkload")
    ):
        detail = (evicted or {}).get("message") or "the Workload is inactive (spec.active: false)"
        return QueueState("Deactivated", f"Workload {name}: {detail}", workload=name)
    # Evicted stays True until Kueue reserves quota again (then it turns False).
    if evicted and evicted.get("reason") == "Preempted":
        # The Preempted condition says who preempted it; Evicted only that it was.
        detail = (true.get("Preempted") or evicted).get("message") or "preempted"
        return QueueState("Preempted", detail, cluster_queue, flavors, name)
    if evicted:  # PodsReadyTimeout, ClusterQueueStopped, AdmissionCheck, ...
        return QueueState(
            "Queued",
            f"evicted ({evicted.get('reason')}): {evicted.get('message') or ''}".rstrip(": "),
            cluster_queue,
            flavors,
            name,
        )
    if "Admitted" in true:
        shown = ", ".join(f"{r}={f}" for r, f in sorted(flavors.items()))
        return QueueState(
            "Admitted",
            f"admitted by ClusterQueue {cluster_queue}" + (f" (flavors: {shown})" if shown else ""),
            cluster_queue,
            flavors,
            name,
        )
    if "QuotaReserved" in true:
        return QueueState(
            "Queued",
            f"quota reserved in ClusterQueue {cluster_queue}, waiting for admission checks",
            cluster_queue,
            flavors,
            name,
        )
    why = _condition(wl, "QuotaReserved").get("message")
    return QueueState(
        "Queued",
        f"LocalQueue {q}: {why}" if why else f"waiting in LocalQueue {q}",
        workload=name,
    )


def workload_active_patch(workload: dict[str, Any], suspend: bool) -> dict[str, Any] | None:
    """The merge patch that pauses (``spec.suspend``) or resumes a queued job, or None.

    Kueue starts an admitted Workload's Job whenever it finds it suspended, so a pause by
    hand goes through the Workload's ``spec.active`` (Kueue then evicts it and suspends the
    Job). Only a Workload the operator deactivated is reactivated.
    """
    meta = workload.get("metadata") or {}
    ours = (meta.get("annotations") or {}).get(ANN_DEACTIVATED) == "true"
    active = (workload.get("spec") or {}).get("active") is not False
    if suspend and (active or not ours):
        return {"metadata": {"annotations": {ANN_DEACTIVATED: "true"}}, "spec": {"active": False}}
    if not suspend and ours:
        return {"metadata": {"annotations": {ANN_DEACTIVATED: None}}, "spec": {"active": True}}
    return None
