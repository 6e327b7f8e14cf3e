"""Scenario s (object storage): data and models in a bucket of an in-cluster S3 server (docs/model-store.md,
"Object storage").

SeaweedFS runs in the test namespace from an image made here with no registry
(cluster/seaweedfs-image.sh: cluster/build-seaweedfs.sh's weed in a one-layer image, loaded into
the workers by cluster/kind/load-images.sh), with one S3 identity whose keys are in a Secret.

s1 A job whose data and model store are both in the bucket Succeeds; its trainer pod mounts no
   PVC, has no node affinity, and gets the Secret's keys only as secretKeyRef env; version 1 is
   in the bucket with its manifest, and no key appears in the trainer's log or the job's status.
s2 A service of two replicas following that job: the replicas land on different nodes (nothing
   pins them to a volume), and a rerun of the job (version 2) rolls them forward under load with
   0 failed requests.
s3 A two-worker job on the bucket, its workers kept apart by anti-affinity: they run on two
   nodes, both read the bucket's CSV, the checkpoint appears in the bucket while they train
   (checkpointIntervalSeconds 0), and they train one model (same final metrics), published as
   version 1 by worker 0.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    E2E,
    TOOLBOX,
    LoadGen,
    check_workers_trained_one_model,
    new_job,
    workers_apart,
)
from e2ekit import (
    LABEL_MODEL_SERVICE,
    LABEL_PART_OF,
    LABEL_TRAINING_JOB,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Result,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
NAME = "dense-s3"
S3 = "seaweedfs"
SECRET = "s3-creds"
BUCKET = "kerasop"
ACCESS_KEY = "AK" + secrets.token_hex(8).upper()
SECRET_KEY = secrets.token_urlsafe(30)


def _seaweedfs_image() -> str:
    """Build (once) and load the SeaweedFS image into the workers; its name."""
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "seaweedfs-image.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout.split()
    tar, image = out[-2], out[-1]
    subprocess.run(["bash", str(REPO / "cluster" / "kind" / "load-images.sh"), tar], check=True)
    return image


def _s3_objects(image: str) -> list[dict[str, Any]]:
    identity = {
        "name": "kerasop",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    labels = {"app": S3, LABEL_PART_OF: "kerasop-e2e"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "labels": labels},
            "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{S3}-identities", "labels": labels},
            "stringData": {"s3.json": json.dumps({"identities": [identity]})},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": S3, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": S3}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": RESTRICTED_POD,
                        "containers": [
                            {
                                "name": S3,
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": [
                                    "server",
                                    "-dir=/data",
                                    "-ip=127.0.0.1",  # the pod's servers talk in the pod
                                    "-ip.bind=0.0.0.0",
                                    "-master.volumeSizeLimitMB=64",
                                    "-master.telemetry=false",
                                    "-volume.max=0",
                                    "-s3",
                                    "-s3.port=8333",
                                    "-s3.config=/config/s3.json",
                                ],
                                "ports": [{"name": "s3", "containerPort": 8333}],
                                "securityContext": RESTRICTED_CONTAINER,
                                "readinessProbe": {
                                    "tcpSocket": {"port": 8333},
                                    "periodSeconds": 2,
                                },
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "config", "mountPath": "/config", "readOnly": True},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "data", "emptyDir": {}},
                            {"name": "config", "secret": {"secretName": f"{S3}-identities"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": S3, "labels": labels},
            "spec": {"selector": {"app": S3}, "ports": [{"name": "s3", "port": 8333}]},
        },
    ]


def _store(e2e: E2E) -> dict[str, Any]:
    return {
        "secretName": SECRET,
        "endpoint": f"http://{S3}.{e2e.namespace}.svc:8333",
        "pathStyle": True,
    }


@pytest.fixture(scope="module")
def bucket(data: E2E, toolbox: str) -> E2E:
    """SeaweedFS serving bucket ``kerasop`` with the sample dense CSV at data/train.csv."""
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(_s3_objects(_seaweedfs_image()), ns)
    k.run("rollout", "status", f"deployment/{S3}", "-n", ns, "--timeout=300s", timeout=360)
    upload = (
        f"fs.exists('{BUCKET}') or fs.mkdir('{BUCKET}')\n"
        f"fs.put_file('/data/dense/train.csv', '{BUCKET}/data/train.csv')\n"
        "print('uploaded')\n"
    )

    def uploaded() -> bool:
        return "uploaded" in _in_bucket(e2e, upload, check=False).stdout

    wait_for("the sample data uploaded to the bucket", uploaded, interval=3, timeout=180)
    return e2e


def _in_bucket(e2e: E2E, code: str, *args: str, check: bool = True) -> Result:
    """Run ``code`` in the toolbox with ``fs``, an fsspec S3 filesystem on the server;
    ``args`` are ``sys.argv[4:]``."""
    return e2e.kubectl.exec(
        TOOLBOX,
        e2e.namespace,
        "python",
        "-c",
        "import fsspec, sys\n"
        "fs = fsspec.filesystem('s3', key=sys.argv[1], secret=sys.argv[2], endpoint_url=sys.argv[3],"
        " config_kwargs={'s3': {'addressing_style': 'path'}})\n" + code,
        ACCESS_KEY,
        SECRET_KEY,
        _store(e2e)["endpoint"],
        *args,
        check=check,
    )


def _bucket_ls(e2e: E2E, prefix: str) -> list[str]:
    """Object keys under ``prefix`` in the bucket."""
    code = "print('\\n'.join(fs.find(sys.argv[4])))\n"
    return _in_bucket(e2e, code, f"{BUCKET}/{prefix}").stdout.split()


def _job(e2e: E2E, name: str = NAME, **spec: Any) -> dict[str, Any]:
    job = new_job(name, epochs=2, **spec)
    job["spec"]["data"] = {
        **job["spec"]["data"],
        "path": f"s3://{BUCKET}/data/train.csv",
        "store": _store(e2e),
    }
    job["spec"]["data"].pop("volume", None)
    job["spec"]["output"] = {
        "modelName": name,
        "uri": f"s3://{BUCKET}/models",
        "store": _store(e2e),
    }
    return job


def test_s1_a_job_trains_from_and_publishes_to_the_bucket(bucket: E2E, phase) -> None:
    e2e = bucket
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(_job(e2e), ns)
    done = e2e.wait_job_phase(NAME, "Succeeded", timeout=1200)
    phase("job on the bucket Succeeded")
    st = done["status"]
    assert st.get("modelVersion") == 1 and "modelClaimName" not in st, json.dumps(st)
    (pod,) = k.list("pods", ns, f"{LABEL_TRAINING_JOB}={NAME}")
    spec = pod["spec"]
    assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v], spec["volumes"]
    assert "podAffinity" not in (spec.get("affinity") or {})
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    for name in ("KERASOP_DATA_AWS_SECRET_ACCESS_KEY", "KERASOP_MODELS_AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    listing = _in_bucket(
        e2e, f"print(fs.cat_file('{BUCKET}/models/{NAME}/1/manifest.json').decode())\n"
    )
    assert '"model.keras"' in listing.stdout, listing.stdout
    log = k.run("logs", pod["metadata"]["name"], "-n", ns).stdout
    assert SECRET_KEY not in log and SECRET_KEY not in json.dumps(done)
    phase("version 1 in the bucket with its manifest; no key in the log or status")


def test_s2_spread_replicas_roll_to_version_2_without_failed_requests(bucket: E2E, phase) -> None:
    e2e = bucket
    k, ns = e2e.kubectl, e2e.namespace
    assert k.get("kerastrainingjob", NAME, ns), "scenario s2 serves the model of s1"
    k.apply(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": NAME},
            "spec": {"model": {"trainingJob": NAME}, "replicas": 2},
        },
        ns,
    )
    e2e.wait_service_ready(NAME, version=1, replicas=2, timeout=600)
    servers = k.list("pods", ns, f"{LABEL_MODEL_SERVICE}={NAME}")
    placement = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in servers}
    assert len(set(placement.values())) == 2, f"both replicas on one node: {placement}"
    for p in servers:
        assert not [v for v in p["spec"]["volumes"] if "persistentVolumeClaim" in v]
    phase(f"2 replicas on {sorted(set(placement.values()))}, no claim")

    with LoadGen(e2e, NAME, NAME, tag="s3-rollout") as load:
        time.sleep(5)
        k.run("delete", "kerastrainingjob", NAME, "-n", ns, "--wait=true", timeout=180)
        wait_for(
            "the old trainer Job to be garbage-collected",
            lambda: k.get("job.batch", f"{NAME}-trainer", ns) is None,
            interval=2,
            timeout=120,
        )
        k.apply(_job(e2e), ns)
        job = e2e.wait_job_phase(NAME, "Succeeded", timeout=1200)
        assert job["status"]["modelVersion"] == 2, json.dumps(job["status"])
        e2e.wait_service_ready(NAME, version=2, replicas=2, timeout=600)
        time.sleep(5)  # traffic on version 2
        result = load.stop()
    shown = json.dumps(result, indent=1)
    phase.note(f"load: {result['total']} requests, {result['failed']} failed")
    assert result["total"] >= 100, f"too little traffic to judge:\n{shown}"
    assert result["failed"] == 0, shown


PAIR = "dense-s3-pair"


def test_s3_two_workers_on_two_nodes_read_and_checkpoint_the_bucket(bucket: E2E, phase) -> None:
    e2e = bucket
    k, ns = e2e.kubectl, e2e.namespace
    job = _job(e2e, PAIR, workers=2)
    job["spec"]["training"].update(epochs=4, batchSize=8, checkpointIntervalSeconds=0)
    job["spec"]["scheduling"] = workers_apart(PAIR)
    k.apply(job, ns)
    checkpoints = f"models/{PAIR}/.checkpoints/"
    seen = wait_for(
        "a checkpoint in the bucket while the workers train",
        lambda: [key for key in _bucket_ls(e2e, checkpoints) if key.endswith("state.json")],
        timeout=900,
        interval=2,
        diagnose=e2e.job_diagnose(PAIR),
    )
    assert (e2e.job(PAIR) or {}).get("status", {}).get("phase") == "Running", seen
    phase("checkpoint in the bucket during training")
    done = e2e.wait_job_phase(PAIR, "Succeeded", timeout=1200)
    assert done["status"].get("modelVersion") == 1, json.dumps(done["status"])
    pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}={PAIR}")
    nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
    assert len(set(nodes.values())) == 2, f"the workers shared a node: {nodes}"
    for pod in pods:
        assert not [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    shards, total = check_workers_trained_one_model(e2e, PAIR, 4)
    assert f"{BUCKET}/models/{PAIR}/1/manifest.json" in _bucket_ls(e2e, f"models/{PAIR}/1")
    left = [key for key in _bucket_ls(e2e, checkpoints) if key.endswith((".json", ".keras"))]
    assert not left, left  # cleared once published (SeaweedFS may keep the empty folder)
    phase.note(f"workers on {sorted(set(nodes.values()))}, shards {shards} of {total} rows")
    phase("two workers, two nodes, one model from the bucket")
