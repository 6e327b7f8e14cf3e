"""Kueue: queueName on the trainer Job, the Workload's conditions in the job's status."""

from __future__ import annotations

from typing import Any

import pytest
from opfactories import NOW, k8s_job, pod, training_job

from kerasop.spec import SpecError
from kerasop.status import KerasTrainingJobStatus
from kerasop_operator import kube as k
from kerasop_operator import training
from kerasop_operator.conditions import find
from kerasop_operator.controller import Config, Controller
from kerasop_operator.kube import ApiError
from kerasop_operator.training import ObservedQueue, ObservedTraining, queue_state
from kerasop_operator.training.queueing import ANN_DEACTIVATED

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
PENDING = (
    "couldn't assign flavors to pod set main: insufficient quota for cpu in flavor"
    " default-flavor, previously considered podsets requests (0) + current podset request"
    " (2) > maximum capacity (1)"
)
PREEMPTED = (
    "Preempted to accommodate a workload (UID: u2, JobUID: j2) due to prioritization in the"
    " ClusterQueue; preemptor path: /cq; preemptee path: /cq"
)


def cnd(type_: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }


def workload(
    *conditions: dict[str, Any],
    job_uid: str = "job-uid-1",
    flavors: dict[str, str] | None = None,
    active: bool | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Kueue v1beta2 Workload of the trainer Job, as Kueue writes it."""
    wl: dict[str, Any] = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": "job-mnist-trainer-3f2a1",
            "namespace": "ml",
            "labels": {"kueue.x-k8s.io/job-uid": job_uid},
            "annotations": annotations or {},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "mnist-trainer",
                    "uid": job_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"queueName": "team-a", "podSets": [{"name": "main", "count": 2}]},
        "status": {"conditions": list(conditions)},
    }
    if active is not None:
        wl["spec"]["active"] = active
    if flavors is not None:
        wl["status"]["admission"] = {
            "clusterQueue": "cluster-a",
            "podSetAssignments": [{"name": "main", "flavors": flavors, "count": 2}],
        }
    return wl


def queued_job(**kw: Any) -> dict[str, Any]:
    return training_job(queueName="team-a", **kw)


def trainer(*, suspend: bool, created: str = NOW, **status: Any) -> dict[str, Any]:
    job = k8s_job(suspend=suspend, **status)
    job["metadata"]["creationTimestamp"] = created
    return job


def state(
    wl: dict[str, Any] | None,
    *,
    suspend: bool = True,
    support: bool = True,
    served: bool = True,
    now: str = NOW,
) -> training.QueueState:
    observed = ObservedQueue("team-a", support=support, served=served, workload=wl)
    return queue_state(observed, trainer(suspend=suspend), now=now)


# ============================================================================================
# spec and the trainer Job


def test_queue_name_puts_kueue_labels_on_a_suspended_job():
    job = training.desired_children(queued_job(priorityClassName="high"), default_image="img").job
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["metadata"]["labels"][PRIORITY_LABEL] == "high"
    assert job["spec"]["suspend"] is True, "Kueue starts it on admission"
    plain = training.desired_children(training_job(), default_image="img").job
    assert QUEUE_LABEL not in plain["metadata"]["labels"] and plain["spec"]["suspend"] is False


def test_queue_label_on_the_resource_means_the_same():
    body = training_job()
    body["metadata"]["labels"] = {QUEUE_LABEL: "team-a"}
    job = training.desired_children(body, default_image="img").job
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a" and job["spec"]["suspend"]
    body["spec"]["queueName"] = "team-a"  # the same queue twice is fine
    assert training.parse(body).queue_name == "team-a"


def test_queue_label_and_queue_name_that_differ_are_rejected():
    body = queued_job()
    body["metadata"]["labels"] = {QUEUE_LABEL: "team-b"}
    with pytest.raises(SpecError, match="differ"):
        training.parse(body)


def test_priority_without_a_queue_is_rejected():
    with pytest.raises(SpecError, match="priorityClassName needs a queue"):
        training.parse(training_job(priorityClassName="high"))


def test_queue_name_must_be_a_name():
    with pytest.raises(SpecError, match="queueName"):
        training.parse(training_job(queueName="Team A"))


def test_kueue_owns_the_suspend_of_a_queued_job():
    plain = training.parse(training_job())
    assert "suspend" in training.job_patched_fields(plain, kueue=True)
    queued = training.parse(queued_job())
    assert "suspend" not in training.job_patched_fields(queued, kueue=True)
    assert "suspend" not in training.job_patched_fields(queued, kueue=False)
    paused = training.parse(queued_job(suspend=True))
    assert "suspend" not in training.job_patched_fields(paused, kueue=True), "via the Workload"
    assert "suspend" in training.job_patched_fields(paused, kueue=False), "no Workload access"


# ============================================================================================
# Workload -> queue state


def test_pending_workload_is_queued_with_kueues_reason():
    st = state(workload(cnd("QuotaReserved", False, "Pending", PENDING)))
    assert (st.stage, st.phase) == ("Queued", "Queued")
    assert st.message == f"LocalQueue team-a: {PENDING}"
    assert st.workload == "job-mnist-trainer-3f2a1"


def test_inadmissible_workload_says_why():
    st = state(
        workload(cnd("QuotaReserved", False, "Inadmissible", "LocalQueue team-a doesn't exist"))
    )
    assert st.stage == "Queued" and "doesn't exist" in st.message


def test_workload_without_conditions_waits_in_its_queue():
    assert state(workload()).message == "waiting in LocalQueue team-a"


def test_quota_reserved_waits_for_admission_checks():
    st = state(
        workload(cnd("QuotaReserved", True, "QuotaReserved"), flavors={"cpu": "default-flavor"})
    )
    assert st.stage == "Queued" and "admission checks" in st.message
    assert st.cluster_queue == "cluster-a"


def test_admitted_workload_names_cluster_queue_and_flavors():
    st = state(
        workload(
            cnd("QuotaReserved", True, "QuotaReserved"),
            cnd("Admitted", True, "Admitted", "The workload is admitted"),
            flavors={"cpu": "default-flavor", "nvidia.com/gpu": "a100"},
        ),
        suspend=False,
    )
    assert st.stage == "Admitted" and st.phase is None
    assert st.flavors == {"cpu": "default-flavor", "nvidia.com/gpu": "a100"}
    assert st.message == (
        "admitted by ClusterQueue cluster-a (flavors: cpu=default-flavor, nvidia.com/gpu=a100)"
    )
    assert st.condition().status == "True"


def test_preempted_workload_says_who_preempted_it():
    evicting = workload(
        cnd("QuotaReserved", True, "QuotaReserved"),
        cnd("Admitted", True, "Admitted"),
        cnd("Evicted", True, "Preempted", "Preempted to accommodate a higher priority Workload"),
        cnd("Preempted", True, "InClusterQueue", PREEMPTED),
        flavors={"cpu": "default-flavor"},
    )
    st = state(evicting, suspend=False)
    assert (st.stage, st.phase, st.message) == ("Preempted", "Preempted", PREEMPTED)
    requeued = workload(
        cnd("QuotaReserved", False, "Pending", PENDING),
        cnd("Admitted", False, "NoReservation"),
        cnd("Evicted", True, "Preempted", "Preempted to accommodate a higher priority Workload"),
        cnd("Preempted", True, "InClusterQueue", PREEMPTED),
        cnd("Requeued", True, "Preempted"),
    )
    assert state(requeued).stage == "Preempted", "until Kueue admits it again"


def test_readmitted_after_preemption_is_admitted():
    st = state(
        workload(
            cnd("QuotaReserved", True, "QuotaReserved"),
            cnd("Admitted", True, "Admitted"),
            cnd("Evicted", False, "QuotaReserved", "Previously: preempted"),
            cnd("Preempted", False, "QuotaReserved", "Previously: " + PREEMPTED),
            flavors={"cpu": "default-flavor"},
        ),
        suspend=False,
    )
    assert st.stage == "Admitted"


def test_other_evictions_are_queued_with_the_reason():
    st = state(
        workload(
            cnd("Admitted", True, "Admitted"),
            cnd("Evicted", True, "PodsReadyTimeout", "Exceeded the PodsReady timeout"),
        )
    )
    assert st.stage == "Queued"
    assert st.message == "evicted (PodsReadyTimeout): Exceeded the PodsReady timeout"


@pytest.mark.parametrize("reason", ["Deactivated", "InactiveWorkload"])
def test_deactivated_workload(reason):
    st = state(workload(cnd("Evicted", True, reason, "The workload is deactivated")))
    assert (st.stage, st.phase) == ("Deactivated", "Queued")
    assert state(workload(active=False)).stage == "Deactivated"


def test_finished_workload_stays_admitted_without_an_event():
    admitted = workload(
        cnd("QuotaReserved", True, "QuotaReserved"), cnd("Admitted", True, "Admitted")
    )
    done = workload(
        cnd("QuotaReserved", True, "QuotaReserved"),
        cnd("Admitted", True, "Admitted"),
        cnd("Finished", True, "Succeeded", "Job finished successfully"),
    )
    assert state(done, suspend=False).stage == "Admitted"
    assert "finished: Job finished successfully" in state(done, suspend=False).message
    never = workload(cnd("Finished", True, "FailedToStart", "bad pod template"))
    st = state(never)
    assert (st.stage, st.phase) == ("Finished", None), "the Job's conditions decide"
    before = {"conditions": [cnd("Admitted", True, "Admitted", state(admitted).message)]}
    after = {"conditions": [cnd("Admitted", True, "Admitted", state(done).message)]}
    assert training.queue_event(before, after) is None


def test_no_workload_yet_then_queue_not_served():
    waiting = state(None)
    assert waiting.stage == "WaitingForWorkload" and waiting.phase is None, "Pending: polled"
    late = state(None, now="2026-11-26T10:01:00Z")
    assert late.stage == "QueueNotServed" and "no Workload for Job mnist-trainer in 60s" in (
        late.message
    )
    assert late.phase is None and late.condition().reason == "QueueNotServed"


def test_workload_api_not_served():
    st = state(None, served=False)
    assert st.stage == "QueueNotServed"
    assert "workloads.kueue.x-k8s.io" in st.message and "remove queueName" in st.message


def test_without_kueue_support_the_job_says_what_it_can():
    waiting = state(None, support=False)
    assert waiting.stage == "Queued" and "kueue.enabled" in waiting.message
    assert state(None, support=False, suspend=False).stage == "Admitted"


# ============================================================================================
# job status and events


def status_of(body, **observed):
    st = training.training_status(body, ObservedTraining(**observed), now=NOW)
    KerasTrainingJobStatus.model_validate(st)  # the shape the CRD accepts
    return st


def cond(st, type_):
    return find(st["conditions"], type_)


def test_status_of_a_queued_job():
    wl = workload(cnd("QuotaReserved", False, "Pending", PENDING))
    st = status_of(
        queued_job(),
        job=trainer(suspend=True),
        queue=ObservedQueue("team-a", support=True, workload=wl),
    )
    assert st["phase"] == "Queued"
    assert cond(st, "Admitted")["status"] == "False" and cond(st, "Admitted")["reason"] == "Queued"
    assert PENDING in cond(st, "Running")["message"]
    assert cond(st, "Suspended")["status"] == "False", "suspended by Kueue, not by hand"
    assert st["queue"] == {"localQueue": "team-a", "workload": "job-mnist-trainer-3f2a1"}


def test_status_of_an_admitted_then_preempted_job():
    admitted = workload(
        cnd("QuotaReserved", True, "QuotaReserved"),
        cnd("Admitted", True, "Admitted"),
        flavors={"cpu": "default-flavor"},
    )
    running = pod(phase="Running", state={"running": {}})
    st = status_of(
        queued_job(),
        job=trainer(suspend=False, active=1, ready=1),
        pods=[running],
        queue=ObservedQueue("team-a", support=True, workload=admitted),
    )
    assert st["phase"] == "Running"
    assert cond(st, "Admitted")["status"] == "True"
    assert st["queue"]["clusterQueue"] == "cluster-a"
    assert st["queue"]["flavors"] == {"cpu": "default-flavor"}

    preempted = workload(
        cnd("QuotaReserved", False, "Pending", PENDING),
        cnd("Evicted", True, "Preempted", "preempted"),
        cnd("Preempted", True, "InClusterQueue", PREEMPTED),
    )
    body = queued_job()
    body["status"] = st
    after = status_of(
        body,
        job=trainer(suspend=True),
        queue=ObservedQueue("team-a", support=True, workload=preempted),
    )
    assert after["phase"] == "Preempted"
    assert cond(after, "Admitted")["reason"] == "Preempted"
    assert cond(after, "Admitted")["message"] == PREEMPTED
    assert after["queue"]["clusterQueue"] == "cluster-a", "the last admission is kept"
    assert training.queue_event(st, after) == ("Warning", "Preempted", PREEMPTED)
    assert training.phase_event(st, after) is None
    assert training.phase_event(after, st) == ("Normal", "Resumed", "training resumed")
    readmitted = {**after, "phase": "Pending"}  # Kueue admitted it again, pods starting
    assert training.phase_event(after, readmitted) is None, "queue_event's Admitted says it"


def test_status_of_a_job_no_kueue_serves():
    st = status_of(
        queued_job(),
        job=trainer(suspend=True, created="2026-11-26T09:50:00Z"),
        queue=ObservedQueue("team-a", support=True),
    )
    assert st["phase"] == "Pending", "not Suspended: nobody paused it"
    assert cond(st, "Admitted")["reason"] == "QueueNotServed"
    assert cond(st, "Running")["reason"] == "QueueNotServed"
    assert training.queue_event({}, st)[:2] == ("Warning", "QueueNotServed")


def test_paused_queued_job_is_suspended():
    st = status_of(
        queued_job(suspend=True),
        job=trainer(suspend=True),
        queue=ObservedQueue("team-a", support=True, workload=workload(active=False)),
    )
    assert st["phase"] == "Suspended" and cond(st, "Suspended")["status"] == "True"


def test_finished_job_wins_over_its_workload():
    done = workload(cnd("Finished", True, "Succeeded"), cnd("Admitted", True, "Admitted"))
    st = status_of(
        queued_job(),
        job=trainer(suspend=False, conditions=[{"type": "Complete", "status": "True"}]),
        queue=ObservedQueue("team-a", support=True, workload=done),
    )
    assert st["phase"] == "Succeeded"


def test_queue_events_follow_kueues_decisions():
    def with_admitted(status: bool, reason: str, message: str = "m") -> dict[str, Any]:
        return {"conditions": [cnd("Admitted", status, reason, message)]}

    queued = with_admitted(False, "Queued", "LocalQueue team-a: insufficient quota")
    admitted = with_admitted(True, "Admitted", "admitted by ClusterQueue cluster-a")
    assert training.queue_event({}, queued) == (
        "Normal",
        "Queued",
        "LocalQueue team-a: insufficient quota",
    )
    assert training.queue_event(queued, queued) is None
    assert training.queue_event(queued, admitted)[:2] == ("Normal", "Admitted")
    assert training.queue_event({}, with_admitted(False, "WaitingForWorkload")) is None
    assert training.queue_event({}, {"phase": "Running"}) is None, "not queued: no event"


def test_workload_active_patch_pauses_and_resumes_only_its_own():
    assert training.workload_active_patch(workload(), suspend=False) is None
    pause = training.workload_active_patch(workload(), suspend=True)
    assert pause == {
        "metadata": {"annotations": {ANN_DEACTIVATED: "true"}},
        "spec": {"active": False},
    }
    paused = workload(active=False, annotations={ANN_DEACTIVATED: "true"})
    assert training.workload_active_patch(paused, suspend=True) is None
    resume = training.workload_active_patch(paused, suspend=False)
    assert resume == {
        "metadata": {"annotations": {ANN_DEACTIVATED: None}},
        "spec": {"active": True},
    }
    by_kueue = workload(active=False)  # e.g. requeued too often: not ours to reactivate
    assert training.workload_active_patch(by_kueue, suspend=False) is None


# ============================================================================================
# the controller against the in-memory store


@pytest.fixture
def events():
    return []


def controller(fake, events, *, kueue: bool = True) -> Controller:
    config = Config(runtime_image="runtime:1", kueue=kueue)
    return Controller(fake, config, lambda body, *e: events.append(e))


def admit(fake) -> None:
    """What Kueue does on admission: the Workload is admitted, the Job unsuspended."""
    job = fake.find("Job", "ml", "mnist-trainer")
    fake.put(
        workload(
            cnd("QuotaReserved", True, "QuotaReserved"),
            cnd("Admitted", True, "Admitted"),
            job_uid=job["metadata"]["uid"],
            flavors={"cpu": "default-flavor"},
        )
    )
    fake.edit("Job", "ml", "mnist-trainer", lambda o: o["spec"].update(suspend=False))


def test_operator_does_not_fight_kueue_over_suspend(fake, events):
    ctl = controller(fake, events)
    fake.put(queued_job())
    ctl.reconcile_training("ml", "mnist")
    job = fake.find("Job", "ml", "mnist-trainer")
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert st["phase"] == "Pending" and cond(st, "Running")["reason"] == "WaitingForWorkload"
    admit(fake)
    ctl.reconcile_training("ml", "mnist")
    assert fake.find("Job", "ml", "mnist-trainer")["spec"]["suspend"] is False
    st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert cond(st, "Admitted")["status"] == "True"
    assert (
        "Normal",
        "Admitted",
        "admitted by ClusterQueue cluster-a (flavors: cpu=default-flavor)",
    ) in events


def test_pause_by_hand_goes_through_the_workload(fake, events):
    ctl = controller(fake, events)
    fake.put(queued_job())
    ctl.reconcile_training("ml", "mnist")
    admit(fake)
    fake.edit("KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].update(suspend=True))
    ctl.reconcile_training("ml", "mnist")
    wl = fake.find("Workload", "ml", "job-mnist-trainer-3f2a1")
    assert wl["spec"]["active"] is False and wl["metadata"]["annotations"][ANN_DEACTIVATED]
    assert fake.find("Job", "ml", "mnist-trainer")["spec"]["suspend"] is False, "Kueue suspends it"
    assert fake.find("KerasTrainingJob", "ml", "mnist")["status"]["phase"] == "Suspended"
    fake.edit("KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].update(suspend=False))
    ctl.reconcile_training("ml", "mnist")
    wl = fake.find("Workload", "ml", "job-mnist-trainer-3f2a1")
    assert wl["spec"]["active"] is True and ANN_DEACTIVATED not in wl["metadata"]["annotations"]


def test_pause_by_hand_without_kueue_support_suspends_the_job(fake, events):
    ctl = controller(fake, events, kueue=False)
    fake.put(queued_job())
    ctl.reconcile_training("ml", "mnist")
    fake.edit("Job", "ml", "mnist-trainer", lambda o: o["spec"].update(suspend=False))
    fake.edit("KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].update(suspend=True))
    ctl.reconcile_training("ml", "mnist")
    assert fake.find("Job", "ml", "mnist-trainer")["spec"]["suspend"] is True
    assert not fake.kinds("Workload")


def test_workload_api_missing_is_reported(fake, events):
    class NoKueue(type(fake)):
        def list(self, kind, namespace=None, *, label_selector=None):
            if kind is k.WORKLOAD:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return super().list(kind, namespace, label_selector=label_selector)

    store = NoKueue()
    ctl = controller(store, events)
    store.put(queued_job())
    ctl.reconcile_training("ml", "mnist")
    st = store.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert cond(st, "Admitted")["reason"] == "QueueNotServed"
    assert events[-1][:2] == ("Warning", "QueueNotServed")
