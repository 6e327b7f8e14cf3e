"""The generated CRDs on a real kube-apiserver: accepted, defaulted, and rejecting bad specs.

Every invalid resource is also checked against the pydantic models, so the API server and the
local CLI agree on what is invalid (the rules are written twice on purpose, see kerasop.spec).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kerasop import spec, status

pytestmark = pytest.mark.component

NAMESPACE = "crd-tests"  # created by the crd_cluster fixture (conftest.py)


def dense_job(name: str = "dense") -> dict[str, Any]:
    """The article's dense network, written minimally (defaults left to the server)."""
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "data": {"format": "csv", "path": "dense/train.csv", "validationSplit": 0.2},
            "model": {
                "layers": [
                    {"type": "Dense", "units": 10, "activation": "relu"},
                    {"type": "Dense", "units": 1, "activation": "sigmoid"},
                ]
            },
            "training": {"epochs": 5, "batchSize": 32},
        },
    }


def transfer_job(name: str = "vgg") -> dict[str, Any]:
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "data": {
                "format": "imageCsv",
                "path": "images/data.csv",
                "image": {"height": 64, "width": 64},
            },
            "model": {
                "transfer": {
                    "application": "VGG16",
                    "weights": "none",
                    "head": [{"type": "Dense", "units": 64, "activation": "relu"}],
                }
            },
            "training": {"loss": "sparse_categorical_crossentropy", "epochs": 3},
            "output": {"modelName": "vgg-cats", "storage": {"claimName": "models"}},
            "workers": 2,
            "scheduling": {
                "nodeSelector": {"gpu": "true"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "podTemplate": {"metadata": {"annotations": {"a": "b"}}},
            },
        },
    }


def gcs_job(name: str = "gcs") -> dict[str, Any]:
    """Data and models in GCS buckets (one name with "_", which GCS allows)."""
    obj = dense_job(name)
    store = {"gcsSecretName": "gcs-key", "endpoint": "http://fake-gcs:4443"}
    obj["spec"]["data"] = {"format": "csv", "path": "gs://data/dense.csv", "store": store}
    obj["spec"]["output"] = {"uri": "gs://team_models/dense", "store": store}
    return obj


def service(name: str = "dense") -> dict[str, Any]:
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"trainingJob": "dense"}, "replicas": 2},
    }


def edit(base: Callable[[], dict[str, Any]], fn: Callable[[dict[str, Any]], None]):
    def make() -> dict[str, Any]:
        obj = base()
        fn(obj["spec"])
        return obj

    return make


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(spec_: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec_
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        node[int(last) if last.isdigit() else last] = value

    return fn


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def fn(spec_: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec_
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[last]

    return fn


def _both(*fns):
    def fn(spec_):
        for f in fns:
            f(spec_)

    return fn


TUNING_SPACE = {
    "training.learningRate": {"logUniform": [1e-4, 1e-1]},
    "model.layers[0].units": {"choice": [8, 16, 32]},
}

# (id, resource factory, substrings every one of which must appear in the API server's error)
INVALID = [
    ("missing-data", edit(dense_job, _del("data")), ["spec.data", "Required value"]),
    (
        "bad-format",
        edit(dense_job, _set("data.format", "parquet")),
        ["spec.data.format", "Unsupported value", "parquet"],
    ),
    (
        "layers-and-transfer",
        edit(dense_job, _set("model.transfer", {"application": "VGG16"})),
        [
            "spec.model",
            "set exactly one of model.layers, model.transfer, model.file and model.builder",
        ],
    ),
    (
        "neither-layers-nor-transfer",
        edit(dense_job, _set("model", {})),
        [
            "spec.model",
            "set exactly one of model.layers, model.transfer, model.file and model.builder",
        ],
    ),
    (
        "layers-and-file",
        edit(dense_job, _set("model.file", {"path": "net.keras"})),
        [
            "spec.model",
            "set exactly one of model.layers, model.transfer, model.file and model.builder",
        ],
    ),
    (
        "builder-and-file",
        edit(
            dense_job,
            _set("model", {"file": {"path": "net.keras"}, "builder": {"module": "m.cnn"}}),
        ),
        [
            "spec.model",
            "set exactly one of model.layers, model.transfer, model.file and model.builder",
        ],
    ),
    (
        "code-path-with-layers",
        edit(dense_job, _set("model.codePath", "code")),
        ["spec.model.codePath", "codePath applies only to model.file and model.builder"],
    ),
    (
        "builder-bad-module",
        edit(dense_job, _set("model", {"builder": {"module": "my-models"}})),
        ["spec.model.builder.module", "should match"],
    ),
    (
        "categorical-columns-npz",
        edit(
            dense_job, _both(_set("data.format", "npz"), _set("data.categoricalColumns", ["city"]))
        ),
        ["spec.data.categoricalColumns", "categoricalColumns applies only to the csv format"],
    ),
    (
        "model-and-script",
        edit(dense_job, _set("script", {"command": ["python", "t.py"]})),
        [
            "spec",
            "set exactly one of model (the built-in trainer) and script (your own training script)",
        ],
    ),
    (
        "neither-model-nor-script",
        edit(dense_job, _del("model")),
        [
            "spec",
            "set exactly one of model (the built-in trainer) and script (your own training script)",
        ],
    ),
    (
        "script-empty-command",
        edit(dense_job, _both(_del("model"), _set("script", {"command": []}))),
        ["spec.script.command", "at least 1"],
    ),
    (
        "bidirectional-without-cell",
        edit(dense_job, _set("model.layers.0", {"type": "Bidirectional", "units": 4})),
        ["spec.model.layers[0]", "Bidirectional needs units and cell"],
    ),
    (
        "text-settings-on-csv",
        edit(dense_job, _set("data.text", {"maxTokens": 100})),
        ["spec.data.text", "text settings apply only to the text format"],
    ),
    (
        "torch-backend",
        edit(dense_job, _set("training.backend", "torch")),
        ["spec.training.backend", "Unsupported value"],
    ),
    (
        "input-not-first",
        edit(dense_job, _set("model.layers.1", {"type": "Input"})),
        ["spec.model.layers", "Input can only be the first of model.layers"],
    ),
    (
        "string-lookup-after-dense",
        edit(dense_job, _set("model.layers.1", {"type": "StringLookup"})),
        ["spec.model.layers", "StringLookup can only start model.layers"],
    ),
    (
        "only-input-layers",
        edit(dense_job, _set("model.layers", [{"type": "Input"}, {"type": "StringLookup"}])),
        ["spec.model.layers", "model.layers needs an output layer"],
    ),
    (
        "input-in-transfer-head",
        edit(transfer_job, _set("model.transfer.head", [{"type": "Input"}])),
        ["spec.model.transfer.head", "transfer.head takes no Input or StringLookup"],
    ),
    (
        "dense-without-units",
        edit(dense_job, _del("model.layers.0.units")),
        ["spec.model.layers[0]", "Dense needs units"],
    ),
    (
        "dense-with-pool-size",
        edit(dense_job, _set("model.layers.0.poolSize", 2)),
        [
            "spec.model.layers[0]",
            "Dense does not take poolSize (poolSize is for MaxPooling2D, AveragePooling2D, MaxPooling1D)",
        ],
    ),
    (
        "head-layer-argument-of-another-layer",
        edit(
            transfer_job,
            _set("model.transfer.head", [{"type": "Dropout", "rate": 0.2, "units": 3}]),
        ),
        ["spec.model.transfer.head[0]", "Dropout does not take units (units is for Dense, LSTM"],
    ),
    (
        "conv-without-kernel",
        edit(dense_job, _set("model.layers.0", {"type": "Conv2D", "filters": 8})),
        ["spec.model.layers[0]", "Conv2D needs filters and kernelSize"],
    ),
    (
        "negative-epochs",
        edit(dense_job, _set("training.epochs", -1)),
        ["spec.training.epochs", "greater than or equal to 1"],
    ),
    (
        "zero-learning-rate",
        edit(dense_job, _set("training.learningRate", 0)),
        ["spec.training.learningRate", "greater than 0"],
    ),
    (
        "validation-split-1.5",
        edit(dense_job, _set("data.validationSplit", 1.5)),
        ["spec.data.validationSplit", "less than 1"],
    ),
    (
        "validation-path-and-split",
        edit(dense_job, _set("data.validationPath", "val.csv")),
        ["spec.data", "set at most one of validationPath and validationSplit"],
    ),
    (
        "image-settings-on-csv",
        edit(dense_job, _set("data.image", {"height": 32})),
        ["spec.data.image", "image settings apply only to image formats"],
    ),
    (
        "weights-file-without-path",
        edit(transfer_job, _set("model.transfer.weights", "file")),
        ["spec.model.transfer.weightsPath", "weightsPath is required when weights is 'file'"],
    ),
    (
        "weights-path-without-file",
        edit(transfer_job, _set("model.transfer.weightsPath", "w.h5")),
        ["spec.model.transfer.weightsPath", "weightsPath is required when weights is 'file'"],
    ),
    (
        "head-dropout-without-rate",
        edit(transfer_job, _set("model.transfer.head", [{"type": "Dropout"}])),
        ["spec.model.transfer.head[0]", "Dropout needs rate"],
    ),
    (
        "storage-claim-and-size",
        edit(transfer_job, _set("output.storage.size", "5Gi")),
        ["spec.output.storage", "set exactly one of claimName (existing PVC) and size (new PVC)"],
    ),
    (
        "storage-neither",
        edit(transfer_job, _set("output.storage", {"accessMode": "ReadWriteMany"})),
        ["spec.output.storage", "set exactly one of claimName (existing PVC) and size (new PVC)"],
    ),
    (
        "bad-model-name",
        edit(dense_job, _set("output.modelName", "Bad_Name")),
        ["spec.output.modelName", "should match"],
    ),
    (
        "bad-storage-size",
        edit(dense_job, _set("output.storage", {"size": "lots"})),
        ["spec.output.storage.size", "should match"],
    ),
    (
        "output-format-twice",
        edit(dense_job, _set("output.formats", ["onnx", "onnx"])),
        ["spec.output.formats[1]", "Duplicate value"],
    ),
    (
        "unknown-output-format",
        edit(dense_job, _set("output.formats", ["torchscript"])),
        ["spec.output.formats[0]", "Unsupported value", "torchscript"],
    ),
    (
        "zero-workers",
        edit(dense_job, _set("workers", 0)),
        ["spec.workers", "greater than or equal to 1"],
    ),
    (
        "empty-layer-list",
        edit(dense_job, _set("model.layers", [])),
        ["spec.model.layers", "at least 1 items"],
    ),
    (
        "unknown-field",
        edit(dense_job, _set("data.colour", "blue")),
        ['unknown field "spec.data.colour"'],
    ),
    (
        "unknown-layer-type",
        edit(dense_job, _set("model.layers.0.type", "Transformer")),
        ["spec.model.layers[0].type", "Unsupported value", "Transformer"],
    ),
    (
        "service-neither-source",
        edit(service, _set("model", {"version": 2})),
        ["spec.model", "set either trainingJob, or name and one of claimName and uri"],
    ),
    (
        "service-name-without-claim",
        edit(service, _set("model", {"name": "m"})),
        ["spec.model", "set either trainingJob, or name and one of claimName and uri"],
    ),
    (
        "service-both-sources",
        edit(service, _set("model", {"trainingJob": "a", "name": "m", "claimName": "c"})),
        ["spec.model", "set either trainingJob, or name and one of claimName and uri"],
    ),
    (
        "service-claim-and-uri",
        edit(service, _set("model", {"name": "m", "claimName": "c", "uri": "s3://bkt/models"})),
        ["spec.model", "set either trainingJob, or name and one of claimName and uri"],
    ),
    (
        "data-unknown-uri-scheme",
        edit(dense_job, _set("data.path", "ftp://host/train.csv")),
        ["spec.data.path", "not a supported URI"],
    ),
    (
        "output-uri-and-storage",
        edit(dense_job, _set("output", {"uri": "s3://bkt/models", "storage": {"size": "1Gi"}})),
        ["spec.output", "set at most one of storage (a volume) and uri (a bucket)"],
    ),
    (
        "output-uri-not-s3-or-gs",
        edit(dense_job, _set("output", {"uri": "az://bkt/models"})),
        ["spec.output.uri", "a model store is s3://bucket"],
    ),
    (
        "output-gs-uri-bad-bucket",
        edit(dense_job, _set("output", {"uri": "gs://Bkt/models"})),
        ["spec.output.uri", "or gs://bucket[/prefix]"],
    ),
    (
        "data-gs-uri-without-key",
        edit(dense_job, _set("data.path", "gs://bucket-only")),
        ["spec.data.path", "not a supported URI"],
    ),
    (
        "autoscaling-min-over-max",
        edit(service, _set("autoscaling", {"minReplicas": 5, "maxReplicas": 2})),
        ["spec.autoscaling", "minReplicas must be <= maxReplicas"],
    ),
    (
        "autoscaling-without-max",
        edit(service, _set("autoscaling", {"minReplicas": 1})),
        ["spec.autoscaling.maxReplicas", "Required value"],
    ),
    (
        "autoscaling-in-flight-zero",
        edit(service, _set("autoscaling", {"maxReplicas": 3, "targetInFlightRequests": 0})),
        ["spec.autoscaling.targetInFlightRequests", "greater than or equal to 1"],
    ),
    (
        "negative-replicas",
        edit(service, _set("replicas", -1)),
        ["spec.replicas", "greater than or equal to 0"],
    ),
    (
        "service-version-zero",
        edit(service, _set("model.version", 0)),
        ["spec.model.version", "greater than or equal to 1"],
    ),
    (
        "grpc-port-is-http",
        edit(service, _set("server", {"grpcPort": 8080})),
        ["spec.server.grpcPort", "grpcPort must be 0 (off)"],
    ),
    (
        "grpc-port-privileged",
        edit(service, _set("server", {"grpcPort": 443})),
        ["spec.server.grpcPort", "grpcPort must be 0 (off)"],
    ),
    (
        "canary-steps-decrease",
        edit(service, _set("rollout", {"canary": {"steps": [50, 10, 100]}})),
        ["spec.rollout.canary.steps", "canary steps must increase"],
    ),
    (
        "canary-not-ending-at-100",
        edit(service, _set("rollout", {"canary": {"steps": [10, 50]}})),
        ["spec.rollout.canary.steps", "the last canary step must be 100"],
    ),
    (
        "canary-step-over-100",
        edit(service, _set("rollout", {"canary": {"steps": [10, 200]}})),
        ["spec.rollout.canary.steps[1]", "less than or equal to 100"],
    ),
    (
        "promote-and-abort-same",
        edit(service, _set("rollout", {"promote": 3, "abort": 3})),
        ["spec.rollout", "promote and abort cannot name the same version"],
    ),
    (
        "tuning-unknown-path",
        edit(
            dense_job, _set("tuning", {"space": {"training.learningRat": {"uniform": [0.1, 0.2]}}})
        ),
        ["spec.tuning", "model or training field"],
    ),
    (
        "tuning-data-path",
        edit(dense_job, _set("tuning", {"space": {"data.path": {"choice": ["a", "b"]}}})),
        ["spec.tuning", "model or training field"],
    ),
    (
        "tuning-max-trials-0",
        edit(dense_job, _set("tuning", {"space": TUNING_SPACE, "maxTrials": 0})),
        ["spec.tuning.maxTrials", "greater than or equal to 1"],
    ),
    (
        "tuning-negative-log-range",
        edit(
            dense_job, _set("tuning", {"space": {"training.learningRate": {"logUniform": [-1, 1]}}})
        ),
        ["spec.tuning", "logUniform is [low, high] with 0 < low < high"],
    ),
    (
        "tuning-two-kinds",
        edit(
            dense_job,
            _set("tuning", {"space": {"training.epochs": {"choice": [1, 2], "intRange": [1, 3]}}}),
        ),
        ["spec.tuning", "must have at most 1 item"],
    ),
    (
        "tuning-hyperband-with-early-stopping",
        edit(
            dense_job,
            _set("tuning", {"space": TUNING_SPACE, "algorithm": "hyperband", "earlyStopping": {}}),
        ),
        ["spec.tuning.earlyStopping", "hyperband stops bad trials by itself"],
    ),
    (
        "tuning-objective-not-reported",
        edit(
            dense_job, _set("tuning", {"space": TUNING_SPACE, "objective": {"metric": "val_auc"}})
        ),
        ["spec.tuning", "is not reported"],
    ),
    (
        "tuning-several-workers",
        edit(dense_job, _both(_set("workers", 2), _set("tuning", {"space": TUNING_SPACE}))),
        ["spec.tuning", "tuning needs the built-in trainer"],
    ),
]


def create(kube, obj: dict[str, Any], *, check: bool = False) -> subprocess.CompletedProcess:
    """kubectl create with strict server-side field validation (unknown fields are errors)."""
    return kube.kubectl(
        "create", "--validate=strict", "-o", "json", "-f", "-", input=json.dumps(obj), check=check
    )


def get(kube, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json").stdout)


@pytest.mark.parametrize("case_id,factory,expected", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resource_rejected(crd_cluster, case_id, factory, expected):
    obj = factory()
    obj["metadata"]["name"] = f"bad-{case_id}".lower().replace(".", "-")
    proc = create(crd_cluster, obj)
    assert proc.returncode != 0, f"{case_id} was accepted:\n{proc.stdout}"
    for text in expected:
        assert text in proc.stderr, f"{case_id}: {text!r} not in:\n{proc.stderr}"


@pytest.mark.parametrize("case_id,factory,expected", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resource_rejected_by_pydantic_too(case_id, factory, expected):
    obj = factory()
    model = spec.KINDS[obj["kind"]]
    with pytest.raises(ValidationError) as err:
        model.model_validate(obj)
    # the same field as the API server names (e.g. "spec.model.layers[0]")
    quoted = re.search(r'"(spec[^"]*)"', expected[0])
    path = quoted.group(1) if quoted else expected[0]
    field = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", path) if p)

    def names_the_field(error):
        loc = tuple(error["loc"])
        if loc[: len(field)] == field:
            return True
        # a check across fields is reported on their parent, with the field in its message
        return loc == field[:-1] and expected[-1] in error["msg"]

    errors = err.value.errors()
    assert any(names_the_field(e) for e in errors), (field, errors)


@pytest.mark.parametrize("factory", [dense_job, transfer_job, gcs_job, service])
def test_valid_resources_accepted_and_defaulted_like_pydantic(crd_cluster, factory):
    obj = factory()
    proc = create(crd_cluster, obj)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(proc.stdout)
    model = spec.KINDS[obj["kind"]]
    # The API server fills in exactly the defaults pydantic fills in.
    from_server = model.model_validate(stored).spec
    from_file = model.model_validate(obj).spec
    assert from_server == from_file
    assert stored["spec"] == json.loads(
        from_file.model_dump_json(by_alias=True, exclude_none=True)
    ), "server-side defaults differ from pydantic's"


def test_defaults_filled_by_server(crd_cluster):
    stored = get(crd_cluster, "kerastrainingjob", "dense")
    s = stored["spec"]
    assert s["training"]["epochs"] == 5 and s["training"]["optimizer"] == "adam"
    assert s["training"]["metrics"] == ["accuracy"]
    # no server default for the volume (it would clash with output.uri): the spec models
    # give a job without uri the 1Gi PVC, as before
    assert "storage" not in s["output"]
    volume = spec.KerasTrainingJob.model_validate(stored).spec.output.volume
    assert volume == spec.StorageSpec(size="1Gi", accessMode="ReadWriteOnce", retain=True)
    assert s["output"]["formats"] == ["onnx"]  # the SavedModel is asked for, not default
    assert s["workers"] == 1 and s["backoffLimit"] == 3 and s["suspend"] is False


def test_apply_twice_changes_nothing(crd_cluster):
    """GitOps: re-applying the same YAML is a no-op (no new resourceVersion/generation)."""
    obj = dense_job("idempotent")
    text = yaml.safe_dump(obj)
    crd_cluster.kubectl("apply", "--server-side", "--validate=strict", "-f", "-", input=text)
    first = get(crd_cluster, "ktj", "idempotent")["metadata"]
    out = crd_cluster.kubectl("apply", "--server-side", "--validate=strict", "-f", "-", input=text)
    second = get(crd_cluster, "ktj", "idempotent")["metadata"]
    assert second["resourceVersion"] == first["resourceVersion"], out.stdout
    assert second["generation"] == first["generation"] == 1


@pytest.mark.parametrize(
    "path,value",
    [
        ("model.layers.0.units", 20),
        ("data.path", "other.csv"),
        ("training.epochs", 50),
        ("output.modelName", "renamed"),
        ("workers", 2),
    ],
)
def test_immutable_parts_of_job_spec(crd_cluster, path, value):
    name = "immutable-" + path.replace(".", "-").lower()
    assert create(crd_cluster, dense_job(name)).returncode == 0
    changed = dense_job(name)
    _set(path, value)(changed["spec"])
    proc = crd_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--validate=strict",
        "-f",
        "-",
        input=json.dumps(changed),
        check=False,
    )
    assert proc.returncode != 0, f"changing spec.{path} was accepted"
    assert "spec: Invalid value" in proc.stderr, proc.stderr
    assert "data, model, script, training, output and workers are immutable" in proc.stderr


def test_mutable_parts_of_job_spec(crd_cluster):
    """suspend, resources, scheduling, deadlines may change on a running job."""
    assert create(crd_cluster, dense_job("mutable")).returncode == 0
    patch = {
        "spec": {
            "suspend": True,
            "resources": {"cpu": "2"},
            "activeDeadlineSeconds": 600,
            "scheduling": {"nodeSelector": {"pool": "cpu"}},
        }
    }
    crd_cluster.kubectl(
        "-n", NAMESPACE, "patch", "ktj", "mutable", "--type=merge", "-p", json.dumps(patch)
    )
    stored = get(crd_cluster, "ktj", "mutable")
    assert stored["spec"]["suspend"] is True and stored["metadata"]["generation"] == 2


def test_status_subresource_keeps_typed_status_and_feeds_columns(crd_cluster):
    metrics = {
        "loss": 0.25,
        "accuracy": 0.9494505524635315,
        "val_loss": 0.30000001192092896,
        "val_accuracy": 0.8765432123456,
    }
    st = status.KerasTrainingJobStatus(
        phase="Running",
        observed_generation=1,
        start_time=status.now_rfc3339(),
        epoch=3,
        epochs=5,
        progress=status.progress(3, 5),
        metrics=metrics,
        display=status.metrics_display(metrics, None),
        model_name="dense",
        model_version=2,
        model_path="dense/2",
        model_formats=["keras", "savedmodel", "onnx"],  # the operator's image choice reads it
        workers=status.WorkersStatus(desired=1, active=1, succeeded=0, failed=0),
        failure=status.FailureStatus(reason="BadData", exit_code=3, message="m", log_tail="t"),
        conditions=[
            status.Condition(
                type="Running",
                status="True",
                reason="Training",
                message="epoch 3/5",
                observed_generation=1,
                last_transition_time=status.now_rfc3339(),
            )
        ],
    ).to_status()
    crd_cluster.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "ktj",
        "dense",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": st}),
    )
    stored = get(crd_cluster, "ktj", "dense")
    assert stored["status"] == st, "the API server pruned or changed status fields"
    assert stored["metadata"]["generation"] == 1  # status writes do not bump generation
    table = crd_cluster.kubectl("-n", NAMESPACE, "get", "ktj", "dense").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME", "PHASE", "EPOCH", "ACCURACY", "LOSS", "VERSION", "TRIALS", "BEST", "AGE"
    ]  # fmt: skip
    # Rounded, and the validation metrics rather than the training ones.
    assert row.split()[:6] == ["dense", "Running", "3/5", "0.8765", "0.3", "2"]
    wide = crd_cluster.kubectl("-n", NAMESPACE, "get", "ktj", "dense", "-o", "wide").stdout
    assert "MEASURED-ON" in wide.splitlines()[0] and "validation" in wide.splitlines()[1]
    # A status write cannot smuggle in spec changes.
    crd_cluster.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "ktj",
        "dense",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"workers": 7}}),
    )
    assert get(crd_cluster, "ktj", "dense")["spec"]["workers"] == 1


def test_status_rejects_bad_phase(crd_cluster):
    proc = crd_cluster.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "ktj",
        "dense",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Exploded"}}',
        check=False,
    )
    assert proc.returncode != 0 and "status.phase" in proc.stderr


def test_service_status_columns_and_scale(crd_cluster):
    st = status.KerasModelServiceStatus(
        phase="Ready",
        replicas=2,
        ready_replicas=2,
        ready=status.ready(2, 2),
        serving_version=2,
        url="http://dense.crd-tests.svc:8080",
        selector="app.kubernetes.io/instance=dense",
        conditions=[status.Condition(type="Ready", status="True", reason="Available")],
        rollout=status.RolloutStatus(
            state="Canary 10%",
            phase="Canary",
            stable=2,
            candidate=3,
            weight=10,
            baseline={"3": status.VersionCounters(requests=5, buckets={"0.01": 5, "+Inf": 5})},
        ),
        history=[status.VersionHistoryEntry(version=2, outcome="Promoted", metrics={"loss": 0.1})],
    ).to_status()
    crd_cluster.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "kms",
        "dense",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": st}),
    )
    table = crd_cluster.kubectl("-n", NAMESPACE, "get", "kms", "dense").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "VERSION", "ROLLOUT", "URL", "AGE"]
    assert row.split()[:6] == [
        "dense",
        "2/2",
        "2",
        "Canary",
        "10%",
        "http://dense.crd-tests.svc:8080",
    ]
    stored = get(crd_cluster, "kms", "dense")["status"]
    assert (
        stored["rollout"] == st["rollout"] and stored["history"] == st["history"]
    )  # nothing pruned
    scale = json.loads(
        crd_cluster.kubectl(
            "-n", NAMESPACE, "get", "kms", "dense", "--subresource=scale", "-o", "json"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == st["selector"]
    crd_cluster.kubectl("-n", NAMESPACE, "scale", "kms", "dense", "--replicas=3")
    assert get(crd_cluster, "kms", "dense")["spec"]["replicas"] == 3


def test_category_and_short_names(crd_cluster):
    out = crd_cluster.kubectl("-n", NAMESPACE, "get", "keras", "-o", "name").stdout
    assert "kerastrainingjob.kerasop.io/dense" in out
    assert "kerasmodelservice.kerasop.io/dense" in out
    assert crd_cluster.kubectl("-n", NAMESPACE, "get", "ktj,kms").returncode == 0


def test_kubectl_explain_shows_descriptions(crd_cluster):
    out = crd_cluster.kubectl("explain", "kerastrainingjob.spec.data").stdout
    assert "Where the training data is and how to read it." in out
    assert "Training file or folder, relative to the data volume; or a URI" in out
    assert "validationSplit" in out and "<number>" in out
    out = crd_cluster.kubectl("explain", "kms.spec.autoscaling").stdout
    assert "maxReplicas" in out and "-required-" in out
    out = crd_cluster.kubectl("explain", "ktj.status.conditions").stdout
    assert "lastTransitionTime" in out


def test_large_valid_model_within_cel_cost(crd_cluster):
    """The biggest allowed layer list still passes CEL (and the transition rule on update)."""
    big = dense_job("big")
    big["spec"]["model"]["layers"] = [
        {"type": "Dense", "units": 4, "activation": "relu"} for _ in range(255)
    ] + [{"type": "Dense", "units": 1, "activation": "sigmoid"}]
    big["spec"]["data"]["featureColumns"] = [f"pixel{i}" for i in range(784)]
    proc = create(crd_cluster, big)
    assert proc.returncode == 0, proc.stderr
    changed = copy.deepcopy(big)
    changed["spec"]["suspend"] = True
    proc = crd_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=json.dumps(changed),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_examples_are_accepted(crd_cluster, path):
    """Every example file passes the API server's validation as written (server-side dry run)."""
    proc = crd_cluster.kubectl(
        "apply",
        "-n",
        NAMESPACE,
        "--dry-run=server",
        "--validate=strict",
        "-f",
        str(path),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(path.read_text()) if d]
    assert proc.stdout.count("(server dry run)") == len(kinds), proc.stdout


@pytest.mark.parametrize("name", ["a" * 64, "Upper-case"])
def test_bad_resource_names_rejected(crd_cluster, name):
    """Names become parts of child object names: DNS labels of at most 63 characters."""
    for obj in (dense_job(name), service(name)):
        proc = create(crd_cluster, obj)
        assert proc.returncode != 0
        assert "metadata.name" in proc.stderr, proc.stderr


def test_script_job_is_accepted_and_its_command_immutable(crd_cluster):
    """A job without spec.model (script mode): the immutability rule copes with the absent
    field; the script may not change, suspend may."""

    def script_job():
        obj = dense_job("scripted")
        del obj["spec"]["model"]
        obj["spec"]["script"] = {"command": ["python", "/app/train.py"]}
        return obj

    assert create(crd_cluster, script_job()).returncode == 0
    changed = script_job()
    changed["spec"]["script"]["command"] = ["python", "/app/other.py"]
    proc = crd_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--validate=strict",
        "-f",
        "-",
        input=json.dumps(changed),
        check=False,
    )
    assert proc.returncode != 0 and "immutable" in proc.stderr, proc.stderr
    crd_cluster.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "ktj",
        "scripted",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}}),
    )
    assert get(crd_cluster, "ktj", "scripted")["spec"]["suspend"] is True


def test_tuning_job_is_accepted_and_its_search_immutable(crd_cluster):
    """A search with every kind of dimension passes the CEL rules (their cost included), and
    its tuning block cannot change afterwards."""
    obj = edit(
        dense_job,
        _set(
            "tuning",
            {
                "space": {
                    **TUNING_SPACE,
                    "training.batchSize": {"intRange": [8, 64, 8]},
                    "training.optimizer": {"choice": ["adam", "sgd"]},
                },
                "algorithm": "bayesian",
                "maxTrials": 6,
                "parallelism": 2,
            },
        ),
    )()
    obj["metadata"]["name"] = "tuned"
    proc = create(crd_cluster, obj)
    assert proc.returncode == 0, proc.stderr
    got = get(crd_cluster, "kerastrainingjob", "tuned")
    assert got["spec"]["tuning"]["space"]["model.layers[0].units"] == {"choice": [8, 16, 32]}
    got["spec"]["tuning"]["maxTrials"] = 7
    proc = crd_cluster.kubectl("replace", "-f", "-", input=json.dumps(got), check=False)
    assert proc.returncode != 0
    assert "tuning is immutable" in proc.stderr

    # the search's status keeps its typed fields and feeds the TRIALS and BEST columns
    best = status.TrialStatus(
        trial_id="2", values={"training.learningRate": "0.003"}, objective=0.97
    )
    st = status.KerasTrainingJobStatus(
        phase="Running",
        tuning=status.TuningStatus(
            trials="3/6",
            done=3,
            total=6,
            metric="accuracy",
            best="accuracy 0.9700",
            best_trial=best,
            top=[best],
            last_trial=best,
            last_trial_status="completed",
        ),
    ).to_status()
    crd_cluster.kubectl(
        "-n", NAMESPACE, "patch", "ktj", "tuned", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": st}),
    )  # fmt: skip
    assert get(crd_cluster, "ktj", "tuned")["status"] == st
    _header, row = crd_cluster.kubectl("-n", NAMESPACE, "get", "ktj", "tuned").stdout.splitlines()[
        :2
    ]
    assert "3/6" in row.split() and "accuracy 0.9700" in row
