"""Children of jobs and services whose data or model store is in a bucket: no PVC and no node
pinning, an emptyDir for the local copy, the Secret's keys as secretKeyRef env only in the pods
that use the store, and nothing of the Secret in the rendered objects but its name."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from opfactories import LATER, NOW, deployment, model_service, training_job

from kerasop.server_metrics import StoreError
from kerasop_operator import serving
from kerasop_operator.controller import Config, Controller
from kerasop_operator.serving import ModelRef, desired_children, resolve_model, service_status
from kerasop_operator.serving.status import model_store_condition
from kerasop_operator.training import ObservedTraining, training_status
from kerasop_operator.training import desired_children as training_children

STORE = {"secretName": "s3-creds", "endpoint": "http://seaweedfs:8333", "pathStyle": True}
BUCKET = "s3://models-bkt/team"
GCS_STORE = {"gcsSecretName": "gcs-key"}
GCS_BUCKET = "gs://models-bkt/team"


def _pod(job_or_deployment):
    return job_or_deployment["spec"]["template"]


def _env(pod):
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def _volume(pod, name):
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def _secret_volumes(pod):
    return {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}


def _mounts(pod):
    return {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}


def test_a_job_with_its_model_store_in_a_bucket_has_no_claim_and_no_pinning():
    body = training_job(
        output={"uri": BUCKET, "store": STORE}, resources={}, scheduling={}, workers=2
    )
    out = training_children(body, default_image="runtime:1", claim_access_modes=["ReadWriteOnce"])
    assert out.pvc is None and out.claim_name == ""
    pod = _pod(out.job)
    assert _volume(pod, "models") == {"name": "models", "emptyDir": {}}
    assert "affinity" not in pod["spec"]  # pods land on any node
    assert "kerasop.io/model-claim" not in pod["metadata"]["labels"]
    env = _env(pod)
    assert env["KERASOP_MODELS_AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["KERASOP_MODELS_AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"]
    assert not any(name.startswith("KERASOP_DATA_AWS") for name in env)  # data on a volume
    # the spec the trainer reads names the Secret, never a key
    assert json.loads(env["KERASOP_SPEC"]["value"])["spec"]["output"]["store"] == STORE


def test_s3_data_with_models_on_the_default_claim():
    body = training_job(data={"format": "csv", "path": "s3://data-bkt/train.csv", "store": STORE})
    out = training_children(body, default_image="runtime:1")
    pod = _pod(out.job)
    assert out.pvc is not None and out.claim_name == "mnist-models"  # as before
    assert _volume(pod, "models")["persistentVolumeClaim"] == {"claimName": "mnist-models"}
    env = _env(pod)
    assert env["KERASOP_DATA_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert not any(name.startswith("KERASOP_MODELS_AWS") for name in env)


def test_a_job_status_names_no_claim_for_a_bucket():
    body = training_job(output={"uri": BUCKET, "store": STORE})
    st = training_status(body, ObservedTraining(), now=NOW)
    assert "modelClaimName" not in st


def test_a_service_of_a_bucket_job_mirrors_the_bucket_on_spread_replicas():
    job = training_job(output={"uri": BUCKET, "store": STORE})
    job["status"] = {"modelVersion": 2, "modelName": "mnist", "modelClaimName": "stale"}
    svc = model_service(replicas=3)
    model = resolve_model(svc, job)
    assert isinstance(model, ModelRef)
    assert model.claim_name is None and model.uri == BUCKET and model.store is not None
    dep = desired_children(
        svc, model, default_image="runtime:1", claim_access_modes=None
    ).deployment
    pod = _pod(dep)
    assert _volume(pod, "models") == {"name": "models", "emptyDir": {}}
    container = pod["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is False  # the mirror writes there
    args = container["args"]
    assert args[args.index("--store-uri") + 1] == BUCKET
    assert json.loads(args[args.index("--store-options") + 1]) == STORE
    assert "affinity" not in pod["spec"]
    assert pod["spec"]["topologySpreadConstraints"]
    env = _env(pod)
    assert env["KERASOP_MODELS_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "AWS_ACCESS_KEY_ID",
    }


def test_a_service_naming_a_bucket_directly():
    svc = model_service(model={"name": "digits", "uri": BUCKET, "store": STORE, "version": 4})
    model = resolve_model(svc, None)
    assert model == ModelRef("digits", None, 4, BUCKET, uri=BUCKET, store=model.store)
    dep = desired_children(svc, model, default_image="runtime:1").deployment
    args = _pod(dep)["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "4"


def test_service_condition_names_the_bucket():
    svc = model_service(model={"name": "digits", "uri": BUCKET})
    st = service_status(svc, resolve_model(svc, None), None, now=NOW)
    cond = next(c for c in st["conditions"] if c["type"] == "ModelAvailable")
    assert BUCKET in cond["message"]


# ModelStoreReachable: what the server pods last saw of the bucket (their /metrics)

DENIED = StoreError(
    "StorageAccessDenied",
    "access to bucket 'models-bkt' denied with the credentials of Secret 's3-creds'",
)


def _store_condition(status):
    return next((c for c in status["conditions"] if c["type"] == "ModelStoreReachable"), None)


def test_store_condition_from_what_the_server_pods_report():
    unknown = model_store_condition(BUCKET, [])
    assert (unknown.status, unknown.reason) == ("Unknown", "NoServerAnswered")

    answered = model_store_condition(BUCKET, [None, None])
    assert (answered.status, answered.reason) == ("True", "StoreAnswered")
    assert answered.message == f"2 of 2 server pods read {BUCKET}"

    denied = model_store_condition(BUCKET, [None, DENIED])
    assert (denied.status, denied.reason) == ("False", "StorageAccessDenied")
    assert denied.message.startswith("1 of 2 server pods: access to bucket 'models-bkt'")
    assert "Secret 's3-creds'" in denied.message
    assert "keep serving" in denied.message


def test_a_refused_store_leaves_the_service_ready_and_the_condition_stays_until_read_again():
    svc = model_service(model={"name": "digits", "uri": BUCKET, "store": STORE})
    model = resolve_model(svc, None)
    dep = deployment()
    svc["status"] = service_status(svc, model, dep, now=NOW, store_errors=[DENIED])
    cond = _store_condition(svc["status"])
    assert (cond["status"], cond["reason"]) == ("False", "StorageAccessDenied")
    ready = next(c for c in svc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # the pods keep serving what they loaded

    # a status refresh that did not read the pods keeps what they said last
    assert _store_condition(service_status(svc, model, dep, now=LATER)) == cond

    svc["status"] = service_status(svc, model, dep, now=LATER, store_errors=[None])
    cond = _store_condition(svc["status"])
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == (
        "True",
        "StoreAnswered",
        LATER,
    )

    # served from a claim again: no store to report on
    on_claim = model_service(model={"name": "digits", "claimName": "models"})
    on_claim["status"] = svc["status"]
    st = service_status(on_claim, resolve_model(on_claim, None), dep, now=LATER)
    assert _store_condition(st) is None


class _ServerMetrics(http.server.BaseHTTPRequestHandler):
    """A server pod's /metrics, as much of it as the store condition reads."""

    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server_pod_metrics(fake, monkeypatch):
    """A running server pod of service ``digits`` whose /metrics (on 127.0.0.1) says
    ``_ServerMetrics.text``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ServerMetrics)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(serving, "PORT", httpd.server_address[1])
    labels = {"kerasop.io/model-service": "digits", "app.kubernetes.io/component": "server"}
    fake.put(
        {
            "kind": "Pod",
            "metadata": {"name": "digits-server-a", "namespace": "ml", "labels": labels},
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
    )
    yield _ServerMetrics
    httpd.shutdown()
    httpd.server_close()


def test_the_operator_reads_the_store_error_from_the_server_pods(fake, server_pod_metrics):
    fake.put(model_service("digits", model={"name": "digits", "uri": BUCKET, "store": STORE}))
    ctl = Controller(fake, Config(runtime_image="runtime:1"), lambda body, *e: None)
    server_pod_metrics.text = (
        "# TYPE kerasop_server_model_store_error_info gauge\n"
        "kerasop_server_model_store_error_info{message=\"access to bucket 'models-bkt' denied"
        ' with the credentials of Secret \'s3-creds\'",model="digits",'
        'reason="StorageAccessDenied"} 1.0\n'
    )
    ctl.reconcile_service("ml", "digits")
    status = fake.find("KerasModelService", "ml", "digits")["status"]
    cond = _store_condition(status)
    assert (cond["status"], cond["reason"]) == ("False", "StorageAccessDenied")
    assert "bucket 'models-bkt'" in cond["message"] and "Secret 's3-creds'" in cond["message"]

    server_pod_metrics.text = 'kerasop_server_model_ready{model="digits"} 1.0\n'
    ctl.sync_service_status("ml", "digits")  # what the periodic store check runs
    cond = _store_condition(fake.find("KerasModelService", "ml", "digits")["status"])
    assert (cond["status"], cond["reason"]) == ("True", "StoreAnswered")


def test_the_store_check_runs_while_the_status_has_the_store_condition():
    import kopf

    import kerasop_operator.handlers as h
    from kerasop_operator.periodic import Periodic

    store = Periodic("store", 30, lambda ns, n: None, 1)
    memo = kopf.Memo(periodic={"store": store})
    svc = {"metadata": {"namespace": "ml", "name": "digits"}, "status": {}}
    h.model_service_event(type="ADDED", body=svc, memo=memo)
    assert store.tracked() == []
    svc["status"]["conditions"] = [{"type": "ModelStoreReachable", "status": "Unknown"}]
    h.model_service_event(type="MODIFIED", body=svc, memo=memo)
    assert store.tracked() == [("ml", "digits")]
    h.model_service_event(type="DELETED", body=svc, memo=memo)
    assert store.tracked() == []


def test_an_image_csv_on_the_volume_gets_the_data_credentials_for_its_image_uris():
    data = {"format": "imageCsv", "path": "shapes/data.csv", "store": STORE}
    env = _env(_pod(training_children(training_job(data=data), default_image="runtime:1").job))
    assert env["KERASOP_DATA_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"


# gs://: store.gcsSecretName's key.json is mounted read-only, and only where the store is used


def _gcs_key(role):
    secret = {
        "secretName": "gcs-key",
        "items": [{"key": "key.json", "path": "key.json"}],
        "defaultMode": 0o440,
    }
    mount = {"name": f"{role}-gcs-key", "mountPath": f"/var/run/secrets/kerasop/{role}"}
    return secret, {**mount, "readOnly": True}


def test_a_job_with_its_model_store_in_gcs_mounts_the_key_for_models_only():
    body = training_job(output={"uri": GCS_BUCKET, "store": GCS_STORE})
    out = training_children(body, default_image="runtime:1")
    assert out.pvc is None
    pod = _pod(out.job)
    secret, mount = _gcs_key("models")
    assert _secret_volumes(pod) == {"models-gcs-key": secret}
    assert _mounts(pod)["models-gcs-key"] == mount
    env = _env(pod)
    assert env["KERASOP_MODELS_GCS_KEY_FILE"] == {
        "name": "KERASOP_MODELS_GCS_KEY_FILE",
        "value": "/var/run/secrets/kerasop/models/key.json",
    }
    assert not any(
        name.startswith(("KERASOP_DATA_AWS", "KERASOP_DATA_GCS", "KERASOP_MODELS_AWS"))
        for name in env
    )
    assert json.loads(env["KERASOP_SPEC"]["value"])["spec"]["output"]["store"] == GCS_STORE


def test_gcs_data_and_s3_models_each_get_their_own_credentials():
    body = training_job(
        data={"format": "csv", "path": "gs://data-bkt/train.csv", "store": GCS_STORE},
        output={"uri": BUCKET, "store": STORE},
    )
    pod = _pod(training_children(body, default_image="runtime:1").job)
    secret, mount = _gcs_key("data")
    assert _secret_volumes(pod) == {"data-gcs-key": secret}
    assert _mounts(pod)["data-gcs-key"] == mount
    env = _env(pod)
    assert env["KERASOP_DATA_GCS_KEY_FILE"]["value"] == "/var/run/secrets/kerasop/data/key.json"
    assert (
        env["KERASOP_MODELS_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    )
    assert "KERASOP_MODELS_GCS_KEY_FILE" not in env and "KERASOP_DATA_AWS_ACCESS_KEY_ID" not in env


def test_the_gcs_key_reaches_no_pod_that_does_not_use_the_store():
    """A data store whose data is on the volume: no key mounted, no env."""
    data = {"format": "csv", "path": "dense/train.csv", "store": GCS_STORE}
    pod = _pod(training_children(training_job(data=data), default_image="runtime:1").job)
    assert _secret_volumes(pod) == {}
    assert not any("gcs-key" in name for name in _mounts(pod))
    assert not any(name.endswith("_GCS_KEY_FILE") for name in _env(pod))


def test_an_image_csv_on_the_volume_gets_the_gcs_key_for_its_image_uris():
    data = {"format": "imageCsv", "path": "shapes/data.csv", "store": GCS_STORE}
    pod = _pod(training_children(training_job(data=data), default_image="runtime:1").job)
    assert _secret_volumes(pod) == {"data-gcs-key": _gcs_key("data")[0]}
    assert _env(pod)["KERASOP_DATA_GCS_KEY_FILE"]["value"].endswith("/data/key.json")


def test_a_service_of_a_gcs_bucket_mounts_the_key_in_its_server_pods():
    svc = model_service(model={"name": "digits", "uri": GCS_BUCKET, "store": GCS_STORE})
    dep = desired_children(svc, resolve_model(svc, None), default_image="runtime:1").deployment
    pod = _pod(dep)
    secret, mount = _gcs_key("models")
    assert _secret_volumes(pod) == {"models-gcs-key": secret}
    assert _mounts(pod)["models-gcs-key"] == mount
    env = _env(pod)
    assert env["KERASOP_MODELS_GCS_KEY_FILE"]["value"] == "/var/run/secrets/kerasop/models/key.json"
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--store-uri") + 1] == GCS_BUCKET
    options = json.loads(args[args.index("--store-options") + 1])
    assert options == {**GCS_STORE, "pathStyle": False}  # names the Secret, never a key


def test_a_service_on_a_claim_gets_no_gcs_key():
    svc = model_service(model={"name": "digits", "claimName": "models"})
    pod = _pod(
        desired_children(svc, resolve_model(svc, None), default_image="runtime:1").deployment
    )
    assert _secret_volumes(pod) == {}
    assert not any(name.endswith("_GCS_KEY_FILE") for name in _env(pod))
