"""Children of jobs and services whose data or model store is in a bucket: no PVC and no node
pinning, an emptyDir for the local copy, the Secret's keys as secretKeyRef env only in the pods
that use the store, and nothing of the Secret in the rendered objects but its name."""

from __future__ import annotations

import json

from opfactories import NOW, model_service, training_job

from kerasop_operator.serving import ModelRef, desired_children, resolve_model, service_status
from kerasop_operator.training import ObservedTraining, training_status
from kerasop_operator.training import desired_children as training_children

STORE = {"secretName": "s3-creds", "endpoint": "http://seaweedfs:8333", "pathStyle": True}
BUCKET = "s3://models-bkt/team"


def _pod(job_or_deployment):
    return job_or_deployment["spec"]["template"]


def _env(pod):
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def _volume(pod, name):
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


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
