"""Unit tests of tools.crdgen and kerasop.crds: drift, structural-schema rules, converter behaviour."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from kerasop import crds as crdschema
from kerasop import spec, status
from tools import crdgen

ALLOWED_KEYS = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
}
# The only free-form places: pod scheduling passthroughs (KerasTrainingJob and KerasModelService).
FREE_FORM = {
    ".spec.scheduling.tolerations[]",
    ".spec.scheduling.affinity",
    ".spec.scheduling.podTemplate",
}
JOB_FREE_FORM = {".spec.model.builder.args"}  # the user's builder keyword arguments
ANY_VALUE = {".spec.tuning.space.*.choice[]"}  # a search's choices: numbers, strings, booleans


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def committed(dir_, name) -> dict[str, Any]:
    return yaml.safe_load((dir_ / name).read_text())


# --------------------------------------------------------------------------------------------
# Drift: the committed files are exactly what the generator writes.


def test_committed_files_match_generator():
    problems = crdgen.check(crdgen.outputs())
    assert not problems, "run `python -m tools.crdgen`:\n" + "\n".join(problems)


def test_chart_crds_are_the_same_files():
    for name in crdschema.crds():
        a, b = (d / name for d in crdgen.CRD_DIRS)
        assert a.read_text() == b.read_text(), name


def test_check_reports_stale_file(tmp_path):
    stale = tmp_path / "x.yaml"
    stale.write_text("old\n")
    original = crdgen.REPO_ROOT
    try:
        crdgen.REPO_ROOT = tmp_path
        assert crdgen.check({stale: "new\n"})
        assert not crdgen.check({stale: "old\n"})
    finally:
        crdgen.REPO_ROOT = original


def test_main_check_passes_on_repo(capsys):
    assert crdgen.main(["--check"]) == 0


# --------------------------------------------------------------------------------------------
# Structural schema rules.


@pytest.mark.parametrize("filename", ["kerastrainingjobs.yaml", "kerasmodelservices.yaml"])
def test_schema_is_structural(filename):
    crd = committed(crdgen.CRD_DIRS[0], filename)
    free_form = FREE_FORM | (JOB_FREE_FORM if filename == "kerastrainingjobs.yaml" else set())
    root = schema_of(crd)
    text = yaml.safe_dump(root)
    assert "$ref" not in text and "$defs" not in text
    for path, node in walk(root):
        bad = set(node) - ALLOWED_KEYS
        assert not bad, f"{path}: {bad}"
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node
        assert "title" not in node, path
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if path in ANY_VALUE:
            assert node == {"x-kubernetes-preserve-unknown-fields": True}, path
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            f"{path} has no single type"
        )
        if preserve:
            assert path.removeprefix("") in free_form, f"unexpected free-form node {path}"
            assert node["type"] == "object"
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), (
                f"{path}: bool additionalProperties"
            )
            assert "properties" not in node, path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True and key.replace("exclusiveM", "m") in node, path
        if "required" in node:
            assert set(node["required"]) <= set(node.get("properties", {})), path
        if "default" in node and node.get("type") == "object" and "properties" in node:
            assert set(node["default"]) <= set(node["properties"]), path
    assert root["properties"]["metadata"] == {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 63, "pattern": spec.NAME_PATTERN}},
    }
    assert root["required"] == ["spec"]
    for path in free_form:
        node = root
        for part in path.strip(".").split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = node["items"]
        assert node["x-kubernetes-preserve-unknown-fields"] is True, path


def test_crd_names_and_subresources():
    ktj, kms = crdschema.training_job_crd(), crdschema.model_service_crd()
    for crd, plural, short in (
        (ktj, "kerastrainingjobs", "ktj"),
        (kms, "kerasmodelservices", "kms"),
    ):
        assert crd["metadata"]["name"] == f"{plural}.kerasop.io"
        assert crd["spec"]["group"] == "kerasop.io"
        assert crd["spec"]["scope"] == "Namespaced"
        names = crd["spec"]["names"]
        assert names["plural"] == plural and names["shortNames"] == [short]
        assert names["categories"] == ["keras"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"]["status"] == {}
    scale = kms["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "scale" not in ktj["spec"]["versions"][0]["subresources"]


@pytest.mark.parametrize("crd_fn", [crdschema.training_job_crd, crdschema.model_service_crd])
def test_printer_columns_point_at_schema_fields(crd_fn):
    crd = crd_fn()
    version = crd["spec"]["versions"][0]
    root = schema_of(crd)
    types = {"string": "string", "integer": "integer", "number": "number"}
    for col in version["additionalPrinterColumns"]:
        if col["jsonPath"].startswith(".metadata"):
            continue
        node = root
        for part in col["jsonPath"].strip(".").split("."):
            node = (
                node["properties"][part] if "properties" in node else node["additionalProperties"]
            )
        assert types[node["type"]] == col["type"], col


def test_printer_columns_names():
    def cols(crd):
        return [
            c["name"]
            for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
            if not c.get("priority")
        ]

    assert cols(crdschema.training_job_crd()) == [
        "Phase",
        "Epoch",
        "Accuracy",
        "Loss",
        "Version",
        "Trials",
        "Best",
        "Age",
    ]
    assert cols(crdschema.model_service_crd()) == ["Ready", "Version", "Rollout", "URL", "Age"]


def test_cel_rules_are_copied_to_the_right_nodes():
    spec_schema = schema_of(crdschema.training_job_crd())["properties"]["spec"]

    def rules(node):
        return [r["rule"] for r in node.get("x-kubernetes-validations", [])]

    assert any("oldSelf" in r for r in rules(spec_schema))
    props = spec_schema["properties"]
    assert rules(props["model"])[:2] == [
        "[has(self.layers), has(self.transfer), has(self.file), has(self.builder)]"
        ".filter(x, x).size() == 1",
        "!has(self.codePath) || has(self.file) || has(self.builder)",
    ]
    # Input and StringLookup only at the start of model.layers, an output layer after them
    assert len(rules(props["model"])) == 5
    assert len(rules(props["data"])) == 6  # + the URI schemes of path and validationPath
    assert len(rules(props["output"])) == 3
    assert "self.type != 'Dense' || has(self.units)" in rules(
        props["model"]["properties"]["layers"]["items"]
    )
    head = props["model"]["properties"]["transfer"]["properties"]["head"]["items"]
    assert rules(head) == rules(props["model"]["properties"]["layers"]["items"])
    assert rules(props["output"]["properties"]["storage"])
    transfer = props["model"]["properties"]["transfer"]
    assert transfer["x-kubernetes-validations"][0]["fieldPath"] == ".weightsPath"
    kms = schema_of(crdschema.model_service_crd())["properties"]["spec"]["properties"]
    assert rules(kms["model"]) and rules(kms["autoscaling"])


def test_lists_touched_by_cel_are_bounded():
    """Lists inside the immutable part of the spec need maxItems (CEL cost estimates)."""
    props = schema_of(crdschema.training_job_crd())["properties"]["spec"]["properties"]
    model = props["model"]["properties"]
    assert model["layers"]["maxItems"] == 256
    assert model["transfer"]["properties"]["head"]["maxItems"] == 64
    assert props["training"]["properties"]["metrics"]["maxItems"] == 8


def test_defaults_match_pydantic():
    """Defaults the API server fills in are the ones pydantic fills in."""
    props = schema_of(crdschema.training_job_crd())["properties"]["spec"]["properties"]
    assert props["training"]["default"] == {}
    assert props["output"]["default"] == {}
    # no storage default in the schema (a default would clash with uri): the spec models give
    # a job without uri the 1Gi PVC, as before
    assert "default" not in props["output"]["properties"]["storage"]
    assert spec.OutputSpec.model_validate({}).volume == spec.StorageSpec(size="1Gi")
    assert props["training"]["properties"]["epochs"]["default"] == 5
    assert props["training"]["properties"]["metrics"]["default"] == ["accuracy"]
    assert props["data"]["properties"]["labelColumn"]["default"] == "label"
    # Every default is a valid value for its model.
    spec.OutputSpec.model_validate(props["output"]["default"])
    spec.TrainingSpec.model_validate(props["training"]["default"])


def test_types_and_bounds_converted():
    props = schema_of(crdschema.training_job_crd())["properties"]["spec"]["properties"]
    split = props["data"]["properties"]["validationSplit"]
    assert split == {
        "description": "Fraction of the training data held out for validation.",
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    channels = props["data"]["properties"]["image"]["properties"]["channels"]
    assert channels["type"] == "integer" and channels["enum"] == [1, 3]
    lr = props["training"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True and lr["maximum"] == 10
    node_selector = props["scheduling"]["properties"]["nodeSelector"]
    assert node_selector["type"] == "object"
    assert node_selector["additionalProperties"] == {"type": "string"}
    assert props["output"]["properties"]["modelName"]["pattern"] == spec.NAME_PATTERN
    assert props["data"]["required"] == ["format", "path"]
    assert schema_of(crdschema.training_job_crd())["properties"]["spec"]["required"] == [
        "data"
    ]  # model or script: a CEL rule


def test_status_schema():
    st = schema_of(crdschema.training_job_crd())["properties"]["status"]["properties"]
    assert st["phase"]["enum"] == list(status.TRAINING_PHASES)
    cond = st["conditions"]
    assert cond["x-kubernetes-list-type"] == "map" and cond["x-kubernetes-list-map-keys"] == [
        "type"
    ]
    assert set(cond["items"]["required"]) == {"type", "status"}
    assert set(cond["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert st["metrics"] == {
        "description": st["metrics"]["description"],
        "type": "object",
        "additionalProperties": {"type": "number"},
    }
    assert st["startTime"]["format"] == "date-time"
    assert set(st["failure"]["properties"]) == {"reason", "exitCode", "message", "logTail"}
    for field in (
        "observedGeneration",
        "completionTime",
        "epoch",
        "epochs",
        "progress",
        "finalMetrics",
        "modelName",
        "modelVersion",
        "modelPath",
        "workers",
    ):
        assert field in st
    kst = schema_of(crdschema.model_service_crd())["properties"]["status"]["properties"]
    for field in (
        "phase",
        "readyReplicas",
        "replicas",
        "servingVersion",
        "url",
        "conditions",
        "ready",
        "selector",
        "observedGeneration",
    ):
        assert field in kst


def test_status_models_dump_camel_case():
    st = status.KerasTrainingJobStatus(
        phase="Running",
        epoch=3,
        epochs=10,
        progress=status.progress(3, 10),
        metrics={"loss": 0.5, "accuracy": 0.8},
        conditions=[
            status.Condition(
                type="Running",
                status="True",
                reason="Training",
                last_transition_time=status.now_rfc3339(),
            )
        ],
    ).to_status()
    assert st["progress"] == "3/10"
    assert st["conditions"][0]["lastTransitionTime"].endswith("Z")
    assert "observedGeneration" not in st
    assert status.ready(2, 3) == "2/3" and status.ready(None, None) == "0/0"
    assert status.progress(None, None) is None and status.progress(None, 5) == "0/5"


# --------------------------------------------------------------------------------------------
# The converter refuses what it cannot express structurally.


class _Union(BaseModel):
    x: int | str


class _FreeForm(BaseModel):
    x: dict[str, Any]


class _Marked(BaseModel):
    x: dict[str, Any] | None = Field(
        None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    y: list[dict[str, Any]] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    z: Literal["a"] = "a"
    s: set[str] = Field(default_factory=set)


def test_union_rejected():
    with pytest.raises(crdschema.SchemaError, match="anyOf"):
        crdschema.model_schema(_Union)


def test_unmarked_free_form_rejected():
    with pytest.raises(crdschema.SchemaError, match="free-form"):
        crdschema.model_schema(_FreeForm)


def test_marked_free_form_and_sets():
    out = crdschema.model_schema(_Marked)["properties"]
    assert out["x"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert out["y"] == {
        "type": "array",
        "default": [],
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    assert out["z"]["enum"] == ["a"] and out["z"]["type"] == "string"
    assert out["s"]["x-kubernetes-list-type"] == "set" and "uniqueItems" not in out["s"]


def test_reference_doc_lists_every_spec_field():
    doc = crdgen.render_reference()
    for model in (
        spec.DataSpec,
        spec.LayerSpec,
        spec.TransferSpec,
        spec.TrainingSpec,
        spec.ModelSpec,
        spec.ModelFileSpec,
        spec.BuilderSpec,
        spec.StorageSpec,
        spec.KerasTrainingJobSpec,
        spec.KerasModelServiceSpec,
        spec.ServedModelSpec,
        spec.AutoscalingSpec,
        status.KerasTrainingJobStatus,
    ):
        for field in model.model_fields.values():
            assert f"`{field.alias}`" in doc, (model.__name__, field.alias)
    assert "Where the training data is and how to read it." in doc
    assert "set exactly one of model.layers, model.transfer, model.file and model.builder" in doc
