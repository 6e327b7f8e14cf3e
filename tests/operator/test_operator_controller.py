"""Reconcile discipline against an in-memory store: what gets written, and how often.

The same flows run against a real kube-apiserver in tests/component/.
"""

from __future__ import annotations

import json

import kopf
import pytest
from opfactories import event_line, model_service, pod, terminated, training_job

from kerasop_operator import apply, handlers
from kerasop_operator import kube as k
from kerasop_operator.controller import Config, Controller, ReconcileError, _apply_failure
from kerasop_operator.kube import ApiError


@pytest.fixture
def events():
    return []


@pytest.fixture
def ctl(fake, events):
    return Controller(fake, Config(runtime_image="runtime:1"), lambda body, *e: events.append(e))


# ============================================================================================
# apply.py


def test_ensure_applied_is_idempotent(fake):
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "s",
            "namespace": "ml",
            "labels": {"a": "1"},
            "ownerReferences": [{"uid": "o", "controller": True}],
        },
        "spec": {"ports": [{"port": 80}]},
    }
    assert apply.ensure_applied(fake, desired)[0] == "created"
    assert apply.ensure_applied(fake, desired)[0] == "unchanged"
    # server-side defaults do not count as drift
    fake.edit("Service", "ml", "s", lambda o: o["spec"].update(clusterIP="10.0.0.7"))
    assert apply.ensure_applied(fake, desired)[0] == "unchanged"
    # someone edits a field we own: put back
    fake.edit("Service", "ml", "s", lambda o: o["spec"].update(ports=[{"port": 81}]))
    assert apply.ensure_applied(fake, desired)[0] == "patched"
    # a field dropped from the desired object is removed (it was applied before)
    del desired["metadata"]["labels"]["a"]
    assert apply.ensure_applied(fake, desired)[0] == "patched"
    assert [w[0] for w in fake.writes] == ["apply", "apply", "apply"]


def test_ensure_applied_refuses_foreign_objects(fake):
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "namespace": "ml"},
            "spec": {},
        }
    )
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "s",
            "namespace": "ml",
            "ownerReferences": [{"uid": "o", "controller": True}],
        },
        "spec": {},
    }
    with pytest.raises(apply.ChildConflict, match="not controlled"):
        apply.ensure_applied(fake, desired)
    assert not fake.writes


def test_ensure_absent_deletes_only_owned(fake):
    fake.put(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": "p",
                "namespace": "ml",
                "ownerReferences": [{"uid": "other", "controller": True}],
            },
        }
    )
    assert apply.ensure_absent(fake, k.PDB, "ml", "p", "mine") == "absent"
    assert fake.find("PodDisruptionBudget", "ml", "p") is not None
    assert apply.ensure_absent(fake, k.PDB, "ml", "p", "other") == "deleted"


# ============================================================================================
# training jobs


def test_reconcile_training_creates_children_once(fake, ctl, events):
    fake.put(training_job())
    ctl.reconcile_training("ml", "mnist")
    job = fake.find("Job", "ml", "mnist-trainer")
    assert job is not None
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-mnist"
    pvc = fake.find("PersistentVolumeClaim", "ml", "mnist-models")
    assert "ownerReferences" not in pvc["metadata"]
    assert fake.find("ServiceAccount", "ml", "kerasop-trainer") is not None
    status = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert status["phase"] == "Pending"
    assert events == [("Normal", "Created", "trainer Job created, waiting for pods")]

    before = list(fake.writes)
    ctl.reconcile_training("ml", "mnist")  # a second reconcile (restart, resync) writes nothing
    ctl.reconcile_training("ml", "mnist")
    assert fake.writes == before
    assert len(fake.kinds("Job")) == 1


def test_suspend_toggles_the_job_only(fake, ctl):
    fake.put(training_job())
    ctl.reconcile_training("ml", "mnist")
    fake.edit(
        "KerasTrainingJob",
        "ml",
        "mnist",
        lambda o: o["spec"].update(suspend=True, activeDeadlineSeconds=600),
    )
    spec_version = fake.find("KerasTrainingJob", "ml", "mnist")["metadata"]["resourceVersion"]
    n = len(fake.writes)
    result = ctl.reconcile_training("ml", "mnist")
    assert not result.template_drift
    job = fake.find("Job", "ml", "mnist-trainer")
    assert job["spec"]["suspend"] is True and job["spec"]["activeDeadlineSeconds"] == 600
    assert [w[:2] for w in fake.writes[n:]] == [
        ("patch", "Job"),
        ("patch/status", "KerasTrainingJob"),
    ]
    body = fake.find("KerasTrainingJob", "ml", "mnist")
    assert body["spec"]["suspend"] is True, "the user's spec is never rewritten"
    assert ("patch", "KerasTrainingJob", "mnist") not in fake.writes
    assert body["metadata"]["resourceVersion"] != spec_version  # only the status write
    fake.edit("KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].pop("activeDeadlineSeconds"))
    ctl.reconcile_training("ml", "mnist")
    assert "activeDeadlineSeconds" not in fake.find("Job", "ml", "mnist-trainer")["spec"]


def test_template_change_while_running_is_reported(fake, ctl):
    fake.put(training_job())
    ctl.reconcile_training("ml", "mnist")
    fake.edit(
        "KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].update(resources={"memory": "2Gi"})
    )
    assert ctl.reconcile_training("ml", "mnist").template_drift
    assert len(fake.kinds("Job")) == 1


def test_template_change_while_suspended_recreates_the_job(fake, ctl, events):
    fake.put(training_job(suspend=True))
    ctl.reconcile_training("ml", "mnist")
    old_uid = fake.find("Job", "ml", "mnist-trainer")["metadata"]["uid"]
    fake.edit(
        "KerasTrainingJob", "ml", "mnist", lambda o: o["spec"].update(resources={"memory": "2Gi"})
    )
    result = ctl.reconcile_training("ml", "mnist")
    assert result.recreated and not result.template_drift
    job = fake.find("Job", "ml", "mnist-trainer")
    assert job["metadata"]["uid"] != old_uid
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    )
    assert ("Normal", "JobRecreated") in [e[:2] for e in events]


def test_finished_job_is_never_recreated(fake, ctl):
    body = training_job()
    body["status"] = {"phase": "Succeeded", "modelVersion": 1}
    fake.put(body)
    ctl.reconcile_training("ml", "mnist")
    assert fake.kinds("Job") == []
    assert fake.find("KerasTrainingJob", "ml", "mnist")["status"]["phase"] == "Succeeded"


def test_invalid_spec_fails_without_children(fake, ctl, events):
    body = training_job()
    body["spec"]["model"] = {"layers": [{"type": "Conv2D"}]}
    fake.put(body)
    result = ctl.reconcile_training("ml", "mnist")
    assert result.spec_error
    assert fake.kinds("Job") == []
    st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert st["phase"] == "Failed" and st["failure"]["reason"] == "InvalidSpec"
    assert events[-1][0] == "Warning"


def test_rejected_child_is_reported(fake, ctl, events):
    fake.put(training_job())

    def refuse(obj):
        raise ApiError(
            422,
            "Invalid",
            'Job.batch "mnist-trainer" is invalid: spec.template.spec.containers[1].image: Required value',
        )

    fake.create_orig, fake.create = (
        fake.create,
        lambda obj: refuse(obj) if obj["kind"] == "Job" else fake.create_orig(obj),
    )
    with pytest.raises(ReconcileError, match="Required value") as failure:
        ctl.reconcile_training("ml", "mnist")
    assert failure.value.permanent, "422: only a spec change can fix it, no retry"
    assert handlers._retry(failure.value, 1.0).__class__ is kopf.PermanentError

    def created_reason():
        st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
        return next(c["reason"] for c in st["conditions"] if c["type"] == "Created")

    assert created_reason() == "ApplyFailed"
    assert [e[:2] for e in events] == [("Warning", "ApplyFailed")], "no Job: no Created event"
    # the progress timer refreshes status in between: the failure stays reported
    ctl.sync_training_status("ml", "mnist", read_logs=True)
    assert created_reason() == "ApplyFailed"
    # a spec change (new generation) clears it until the next attempt says otherwise
    fake.edit("KerasTrainingJob", "ml", "mnist", lambda o: o["metadata"].update(generation=2))
    ctl.sync_training_status("ml", "mnist")
    assert created_reason() == "Creating"


def test_only_a_refused_object_is_a_permanent_failure():
    def kopf_error(exc):
        return handlers._retry(_apply_failure(exc), 1.0)

    assert isinstance(kopf_error(ApiError(422, "Invalid", "bad")), kopf.PermanentError)
    assert isinstance(kopf_error(ApiError(400, "BadRequest", "bad")), kopf.PermanentError)
    # a foreign object with our name may go away; RBAC may be fixed: retried, slowly
    assert isinstance(kopf_error(apply.ChildConflict("Service s exists")), kopf.TemporaryError)
    assert isinstance(kopf_error(ApiError(403, "Forbidden", "no")), kopf.TemporaryError)


def test_status_sync_reads_termination_message_and_logs(fake, ctl, events):
    fake.put(training_job())
    ctl.reconcile_training("ml", "mnist")
    job = fake.find("Job", "ml", "mnist-trainer")
    uid = job["metadata"]["uid"]
    fake.put(pod("mnist-trainer-x", job_uid=uid, phase="Running", state={"running": {}}))
    fake.edit("Job", "ml", "mnist-trainer", lambda o: o.update(status={"active": 1, "ready": 1}))
    fake.logs["mnist-trainer-x"] = "\n".join(
        [
            event_line("start", epochs=5),
            event_line("epoch", epoch=2, epochs=5, metrics={"loss": 0.5}),
        ]
    )
    ctl.sync_training_status("ml", "mnist", read_logs=True)
    st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert (st["phase"], st["progress"], st["metrics"]) == ("Running", "2/5", {"loss": 0.5})

    done = event_line(
        "done", modelName="mnist", modelVersion=1, metrics={"accuracy": 0.9}, epochsRun=5
    )
    fake.put(
        pod(
            "mnist-trainer-x",
            job_uid=uid,
            phase="Succeeded",
            state=terminated(0, done, "Completed"),
        )
    )
    fake.edit(
        "Job",
        "ml",
        "mnist-trainer",
        lambda o: o.update(
            status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        ),
    )
    ctl.sync_training_status("ml", "mnist")
    st = fake.find("KerasTrainingJob", "ml", "mnist")["status"]
    assert (st["phase"], st["modelVersion"], st["finalMetrics"]) == (
        "Succeeded",
        1,
        {"accuracy": 0.9},
    )
    assert [e[1] for e in events] == ["Created", "Running", "Succeeded"]
    n = len(fake.writes)
    ctl.sync_training_status("ml", "mnist")
    assert len(fake.writes) == n, "no status write when nothing changed"


# ============================================================================================
# model services


def test_service_waits_for_model_then_follows_versions(fake, ctl, events):
    job = training_job()
    job["status"] = {"phase": "Running"}
    fake.put(job)
    fake.put(model_service())
    ctl.reconcile_service("ml", "mnist")
    assert fake.find("Deployment", "ml", "mnist-server") is None
    assert fake.find("Service", "ml", "mnist") is not None
    st = fake.find("KerasModelService", "ml", "mnist")["status"]
    assert st["phase"] == "Pending"
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == "WaitingForModel"

    # the job produces version 1: services following it are reconciled
    live_job = fake.edit(
        "KerasTrainingJob",
        "ml",
        "mnist",
        lambda o: o["status"].update(modelVersion=1, modelName="mnist"),
    )
    assert ctl.training_job_seen(live_job) == ["mnist"]
    dep = fake.find("Deployment", "ml", "mnist-server")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "1"
    assert (
        dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == "mnist-models"
    )
    # the same version again: nothing to do
    assert ctl.training_job_seen(live_job) == []
    # a new version rolls the Deployment forward
    live_job = fake.edit(
        "KerasTrainingJob", "ml", "mnist", lambda o: o["status"].update(modelVersion=2)
    )
    ctl.training_job_seen(live_job)
    args = fake.find("Deployment", "ml", "mnist-server")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert args[args.index("--version") + 1] == "2"
    assert len(fake.kinds("Deployment")) == 1


def test_service_image_follows_what_the_trainer_exported(fake, events):
    ctl = Controller(
        fake,
        Config(runtime_image="runtime:1", serving_image="serving:1"),
        lambda body, *e: events.append(e),
    )
    job = training_job()
    job["status"] = {"modelVersion": 1, "modelName": "mnist", "modelFormats": ["keras", "onnx"]}
    fake.put(job)
    fake.put(model_service())
    ctl.reconcile_service("ml", "mnist")

    def image():
        dep = fake.find("Deployment", "ml", "mnist-server")
        return dep["spec"]["template"]["spec"]["containers"][0]["image"]

    assert image() == "serving:1"
    # version 2 has no model.onnx (e.g. string inputs): the Keras image rolls out with it
    live_job = fake.edit(
        "KerasTrainingJob",
        "ml",
        "mnist",
        lambda o: o["status"].update(modelVersion=2, modelFormats=["keras", "savedmodel"]),
    )
    ctl.training_job_seen(live_job)
    assert image() == "runtime:1"


def test_service_reconcile_is_idempotent_and_cleans_up(fake, ctl):
    fake.put(
        model_service(
            model={"name": "m", "claimName": "store", "version": 2},
            replicas=2,
            autoscaling={"minReplicas": 2, "maxReplicas": 3},
        )
    )
    ctl.reconcile_service("ml", "mnist")
    assert fake.find("HorizontalPodAutoscaler", "ml", "mnist") is not None
    assert fake.find("PodDisruptionBudget", "ml", "mnist") is not None
    before = list(fake.writes)
    ctl.reconcile_service("ml", "mnist")
    assert fake.writes == before
    fake.edit(
        "KerasModelService",
        "ml",
        "mnist",
        lambda o: (o["spec"].pop("autoscaling"), o["spec"].update(replicas=1)),
    )
    ctl.reconcile_service("ml", "mnist")
    assert fake.find("HorizontalPodAutoscaler", "ml", "mnist") is None
    assert fake.find("PodDisruptionBudget", "ml", "mnist") is None
    assert fake.find("Deployment", "ml", "mnist-server")["spec"]["replicas"] == 1


def test_jobs_first_seen_without_a_model_do_not_list_the_services(fake, ctl, monkeypatch):
    """At start-up every job is seen once: those with no model yet have nothing to roll
    forward, so they cost no list of the namespace's services (N jobs x M services)."""
    fake.put(model_service())
    listed = []
    real_list = fake.list
    monkeypatch.setattr(
        fake, "list", lambda kind, *a, **kw: listed.append(kind.kind) or real_list(kind, *a, **kw)
    )
    for i in range(5):
        assert ctl.training_job_seen(fake.put(training_job(f"job-{i}"))) == []
    assert ctl.training_job_seen(fake.put(training_job())) == []  # "mnist", followed
    assert "KerasModelService" not in listed
    live = fake.edit(
        "KerasTrainingJob", "ml", "mnist", lambda o: o.update(status={"modelVersion": 1})
    )
    assert ctl.training_job_seen(live) == ["mnist"]


def test_service_keeps_serving_when_job_is_deleted(fake, ctl):
    job = training_job()
    job["status"] = {"modelVersion": 3}
    fake.put(job)
    fake.put(model_service())
    ctl.reconcile_service("ml", "mnist")
    dep_before = fake.find("Deployment", "ml", "mnist-server")
    fake.objects.pop(("KerasTrainingJob", "ml", "mnist"))
    ctl.training_job_seen(job, deleted=True)
    dep_after = fake.find("Deployment", "ml", "mnist-server")
    assert dep_after["metadata"]["resourceVersion"] == dep_before["metadata"]["resourceVersion"]
    assert dep_after == dep_before
    st = fake.find("KerasModelService", "ml", "mnist")["status"]
    model = next(c for c in st["conditions"] if c["type"] == "ModelAvailable")
    assert (model["status"], model["reason"]) == ("False", "TrainingJobNotFound")


def _service_account(**labels):
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "kerasop-trainer", "namespace": "ml", "labels": labels}}  # fmt: skip


def test_shared_service_account_is_owned_by_each_user_once(fake):
    from kerasop_operator.common import common_labels

    desired = _service_account(**common_labels("trainer"))
    first = fake.put(training_job("a"))
    second = fake.put(training_job("b"))
    assert apply.ensure_shared(fake, desired, first)[0] == "created"
    assert apply.ensure_shared(fake, desired, second)[0] == "patched"
    assert apply.ensure_shared(fake, desired, second)[0] == "exists"
    refs = fake.find("ServiceAccount", "ml", "kerasop-trainer")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [first["metadata"]["uid"], second["metadata"]["uid"]]
    assert not any(r["controller"] or r["blockOwnerDeletion"] for r in refs)


def test_shared_service_account_keeps_a_reference_added_concurrently(fake, monkeypatch):
    """Another owner's reconcile adds its reference between our read and our write: the
    reference is merged into the stored list (not the list we read), both stay."""
    from kerasop_operator.common import common_labels

    desired = _service_account(**common_labels("trainer"))
    first, second, third = (fake.put(training_job(n)) for n in ("a", "b", "c"))
    apply.ensure_shared(fake, desired, first)
    stale = fake.find("ServiceAccount", "ml", "kerasop-trainer")
    apply.ensure_shared(fake, desired, second)  # lands after `stale` was read
    reads = iter([stale])
    real_get = fake.get
    monkeypatch.setattr(fake, "get", lambda *a: next(reads, None) or real_get(*a))
    assert apply.ensure_shared(fake, desired, third)[0] == "patched"
    refs = fake.find("ServiceAccount", "ml", "kerasop-trainer")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [o["metadata"]["uid"] for o in (first, second, third)]


def test_service_account_of_another_tool_is_left_alone(fake):
    fake.put(_service_account(**{"app.kubernetes.io/managed-by": "Helm"}))
    assert apply.ensure_shared(fake, _service_account(), fake.put(training_job("a")))[0] == "exists"
    assert "ownerReferences" not in fake.find("ServiceAccount", "ml", "kerasop-trainer")["metadata"]


# ============================================================================================
# rollout (gate, canary) through the controller; the state machine itself: test_operator_rollout


def test_rollout_gates_canaries_and_resumes_after_a_restart(fake, events, monkeypatch):
    import json

    from kerasop_operator import controller

    now = [1000.0]
    monkeypatch.setattr(controller, "clock", lambda: now[0])
    job = training_job()
    job["status"] = {
        "phase": "Succeeded",
        "modelName": "mnist",
        "modelVersion": 1,
        "finalMetrics": {"accuracy": 0.95, "loss": 0.2},
    }
    fake.put(job)
    fake.put(
        model_service(
            rollout={
                "gate": {"min": {"val_accuracy": 0.9}},
                "canary": {
                    "steps": [10, 50, 100],
                    "dwellSeconds": 30,
                    "minRequests": 0,
                },  # no pods here
            }
        )
    )
    ctl = Controller(fake, Config(runtime_image="runtime:1"), lambda body, *e: events.append(e))

    def plan():
        return json.loads(fake.find("ConfigMap", "ml", "mnist-rollout")["data"]["rollout.json"])

    def release(version, accuracy):
        live = fake.edit(
            "KerasTrainingJob",
            "ml",
            "mnist",
            lambda o: o["status"].update(modelVersion=version, finalMetrics={"accuracy": accuracy}),
        )
        ctl.training_job_seen(live)

    ctl.reconcile_service("ml", "mnist")
    assert plan() == {"stable": 1, "candidate": None, "weight": 0, "shadow": False}
    container = fake.find("Deployment", "ml", "mnist-server")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--version" not in container["args"]
    assert container["args"][container["args"].index("--rollout-file") + 1] == (
        "/etc/kerasop/rollout/rollout.json"
    )

    release(2, 0.5)  # worse: refused, version 1 keeps serving
    assert plan()["stable"] == 1 and plan()["candidate"] is None
    st = fake.find("KerasModelService", "ml", "mnist")["status"]
    assert st["rollout"]["state"] == "Refused"
    assert (
        st["history"][1]["outcome"] == "Refused" and "0.5 < min 0.9" in st["history"][1]["reason"]
    )
    assert ("Warning", "Refused") in [e[:2] for e in events]

    release(3, 0.96)
    assert plan() == {"stable": 1, "candidate": 3, "weight": 10, "shadow": False}
    deployment_before = fake.find("Deployment", "ml", "mnist-server")["spec"]

    # the operator restarts: a new controller, only status survives
    ctl = Controller(fake, Config(runtime_image="runtime:1"), lambda body, *e: events.append(e))
    now[0] += 10
    ctl.reconcile_service("ml", "mnist")
    assert plan()["weight"] == 10  # the dwell goes on from where it was
    now[0] += 25
    ctl.reconcile_service("ml", "mnist")
    assert plan()["weight"] == 50
    assert fake.find("Deployment", "ml", "mnist-server")["spec"] == deployment_before  # no restart

    fake.edit(
        "KerasModelService",
        "ml",
        "mnist",
        lambda o: o["metadata"].update(annotations={"kerasop.io/rollout": "promote=3"}),
    )
    ctl.reconcile_service("ml", "mnist")
    ctl.reconcile_service("ml", "mnist")  # again: nothing is promoted twice
    assert plan() == {"stable": 3, "candidate": None, "weight": 0, "shadow": False}
    history = fake.find("KerasModelService", "ml", "mnist")["status"]["history"]
    assert [(e["version"], e["outcome"]) for e in history] == [
        (1, "Promoted"),
        (2, "Refused"),
        (3, "Promoted"),
    ]
    assert [e[1] for e in events if e[1] == "Promoted"] == ["Promoted", "Promoted"]


def test_a_new_rollout_plan_is_delivered_to_the_server_pods_at_once(fake, events):
    """Each server pod is annotated with the plan's digest once per plan: the kubelet
    rewrites a mounted ConfigMap at once when its pod changes (else within a minute)."""
    job = training_job()
    job["status"] = {"phase": "Succeeded", "modelName": "mnist", "modelVersion": 1}
    fake.put(job)
    fake.put(model_service(rollout={"canary": {"steps": [50, 100], "dwellSeconds": 30}}))
    labels = {"kerasop.io/model-service": "mnist", "app.kubernetes.io/component": "server"}
    for name in ("mnist-server-a", "mnist-server-b"):
        fake.put({"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "labels": labels}})
    fake.put({"kind": "Pod", "metadata": {"name": "other", "namespace": "ml", "labels": {}}})
    ctl = Controller(fake, Config(runtime_image="runtime:1"), lambda body, *e: events.append(e))

    def nudges():
        return sorted(w[2] for w in fake.writes if w[:2] == ("patch", "Pod"))

    def digests():
        return {
            (fake.find("Pod", "ml", name)["metadata"].get("annotations") or {}).get(
                "kerasop.io/rollout-plan"
            )
            for name in ("mnist-server-a", "mnist-server-b")
        }

    ctl.reconcile_service("ml", "mnist")
    assert nudges() == ["mnist-server-a", "mnist-server-b"]
    first = digests()
    assert len(first) == 1 and None not in first
    assert "annotations" not in fake.find("Pod", "ml", "other")["metadata"]

    ctl.reconcile_service("ml", "mnist")  # same plan: no pod is touched again
    assert nudges() == ["mnist-server-a", "mnist-server-b"]

    live = fake.edit(
        "KerasTrainingJob", "ml", "mnist", lambda o: o["status"].update(modelVersion=2)
    )
    ctl.training_job_seen(live)  # version 2 becomes the canary: a new plan
    plan = json.loads(fake.find("ConfigMap", "ml", "mnist-rollout")["data"]["rollout.json"])
    assert plan["candidate"] == 2
    assert nudges() == ["mnist-server-a", "mnist-server-a", "mnist-server-b", "mnist-server-b"]
    second = digests()
    assert len(second) == 1 and second != first
