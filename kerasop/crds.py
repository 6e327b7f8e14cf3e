"""CustomResourceDefinitions from the typed models (the build tool ``tools/crdgen.py`` writes them).

The typed models in :mod:`kerasop.spec` (spec) and :mod:`kerasop.status`
(status) are the one source of truth. Their pydantic JSON schemas
(``by_alias=True, mode="validation"``) are turned into *structural* OpenAPI v3
schemas as Kubernetes requires them:

- every ``$ref``/``$defs`` is inlined; ``anyOf: [X, {type: null}]`` becomes X
  (an optional field is simply one that is not ``required``);
- ``title`` and ``additionalProperties: false`` are dropped (unknown fields are
  rejected by strict field validation, not by the schema);
- draft 2020 ``exclusiveMinimum: 0`` becomes OpenAPI 3.0 ``minimum: 0,
  exclusiveMinimum: true``; ``const`` becomes a one-value ``enum``;
- ``dict[str, X]`` becomes ``additionalProperties: X``; a field marked with
  ``x-kubernetes-preserve-unknown-fields`` becomes ``type: object`` with that
  flag (or an array whose items carry it); on an ``Any`` (a list item) it becomes an
  untyped node with the flag: any JSON value, e.g. the values of a search's ``choice``;
- defaults are kept, including the defaults of ``default_factory`` fields
  (a nested model's default is its non-default fields, usually ``{}``), so the
  API server fills the same defaults pydantic does and CEL rules can rely on
  them (the immutability rule compares ``self.training == oldSelf.training``);
- model-level ``x-kubernetes-validations`` (CEL) are copied as they are.

Anything the converter does not understand raises :class:`SchemaError`
instead of being passed through, so a new pydantic construct cannot produce a
CRD that the API server rejects or, worse, silently accepts too much.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from kerasop import spec as spec_models
from kerasop import status as status_models

GROUP = spec_models.GROUP
VERSION = spec_models.VERSION
CATEGORIES = ["keras"]


class SchemaError(ValueError):
    """A pydantic schema construct that has no structural OpenAPI equivalent."""


# --------------------------------------------------------------------------
# pydantic -> JSON schema
# --------------------------------------------------------------------------


class _GenerateWithFactoryDefaults(GenerateJsonSchema):
    """Also emit defaults of ``default_factory`` fields.

    A nested model's default is dumped without its own defaults (the API server
    fills those in recursively), so ``Field(default_factory=TrainingSpec)``
    becomes ``default: {}`` and ``StorageSpec(size="1Gi")`` becomes
    ``default: {size: 1Gi}``.
    """

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            if isinstance(value, BaseModel):
                return value.model_dump(by_alias=True, exclude_defaults=True, mode="json")
            return value
        return super().get_default_value(schema)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_GenerateWithFactoryDefaults
    )


# --------------------------------------------------------------------------
# JSON schema -> structural OpenAPI v3
# --------------------------------------------------------------------------

# Keys dropped without a trace.
_DROPPED_KEYS = ("title", "$defs", "examples")
# Output order of keys in a schema node (the rest, if any, follow in this order too).
_KEY_ORDER = (
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
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
)
PRESERVE = "x-kubernetes-preserve-unknown-fields"
# Keys copied as they are (after their values are converted where needed): every
# ordered key but the preserve flag and the child schemas, which are handled apart.
_SCALAR_KEYS = frozenset(_KEY_ORDER) - {PRESERVE, "items", "additionalProperties", "properties"}


def _resolve_ref(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaError(f"cannot resolve $ref {ref!r}")
    resolved: dict[str, Any] = defs[ref[len(prefix) :]]
    return resolved


def _flatten(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline ``$ref``/``allOf: [one]`` and strip ``anyOf`` with ``null``.

    Keys on the referring node win over the referenced definition (a field's
    description over the model's docstring, a field's default).
    """
    node = dict(node)
    if "$ref" in node:
        target = _resolve_ref(node.pop("$ref"), defs)
        node = {**_flatten(target, defs, path), **node}
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{path}: allOf with {len(parts)} members is not supported")
        node = {**_flatten(parts[0], defs, path), **node}
    if "anyOf" in node or "oneOf" in node:
        key = "anyOf" if "anyOf" in node else "oneOf"
        options = [o for o in node.pop(key) if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(
                f"{path}: {key} with {len(options)} non-null options is not structural;"
                " use one type (and a CEL rule) instead"
            )
        inner = _flatten(options[0], defs, path)
        if node.get("default", 0) is None:
            del node["default"]
        node = {**inner, **node}
    if node.get("default", 0) is None:
        del node["default"]
    return node


def _order(node: dict[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return {k: node[k] for k in sorted(node, key=lambda k: rank.get(k, len(rank)))}


def _infer_type(node: dict[str, Any], path: str) -> str:
    values = node.get("enum")
    if values:
        kinds = {type(v) for v in values}
        for py, name in ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number")):
            if kinds == {py}:
                return name
        if kinds <= {int, float}:
            return "number"
    raise SchemaError(f"{path}: no type (and none can be inferred)")


def structural(
    node: dict[str, Any], defs: dict[str, Any] | None = None, path: str = ""
) -> dict[str, Any]:
    """Convert one pydantic JSON schema node (and its children) to structural OpenAPI."""
    if defs is None:
        defs = node.get("$defs", {})
    node = _flatten(node, defs, path or ".")
    preserve = bool(node.pop(PRESERVE, False))
    out = _keywords(node, path)
    if "type" not in out and not preserve:
        out["type"] = "object" if "properties" in node else _infer_type(node, path)
    if isinstance(out.get("type"), list):
        raise SchemaError(f"{path}: a list of types is not structural")

    kind = out.get("type")
    if preserve and kind is None and not node.keys() & {"properties", "additionalProperties"}:
        out[PRESERVE] = True  # pydantic's Any: any JSON value (a number, a string, ...)
        return _order(out)
    if kind == "object" or (preserve and kind is None):
        _object_children(node, out, defs, path, preserve)
    elif kind == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            raise SchemaError(f"{path}: array without a single items schema")
        if preserve:
            items = {**items, PRESERVE: True}
        out["items"] = structural(items, defs, f"{path}[]")
    elif preserve:
        raise SchemaError(f"{path}: {PRESERVE} on a {kind} field")
    elif "properties" in node or "items" in node or "additionalProperties" in node:
        raise SchemaError(f"{path}: {kind} node with children")

    missing = [r for r in out.get("required", []) if r not in out.get("properties", {})]
    if missing:
        raise SchemaError(f"{path}: required but not a property: {missing}")
    return _order(out)


def _keywords(node: dict[str, Any], path: str) -> dict[str, Any]:
    """The node's own keywords (no children), translated to what a CRD schema allows."""
    if "const" in node:
        node.setdefault("enum", [node.pop("const")])
    if node.pop("uniqueItems", False):
        # uniqueItems is forbidden in CRDs (quadratic); a set-typed list says the same.
        node.setdefault("x-kubernetes-list-type", "set")
    out: dict[str, Any] = {}
    for key in list(node):
        if key in _DROPPED_KEYS:
            continue
        if key in _SCALAR_KEYS:
            out[key] = copy.deepcopy(node[key])
        elif key not in ("properties", "items", "additionalProperties"):
            raise SchemaError(f"{path or '.'}: unsupported JSON schema key {key!r}")

    # JSON schema draft 2020 -> OpenAPI 3.0 exclusive bounds.
    for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(excl)
        if value is not None and not isinstance(value, bool):
            if bound in out:
                raise SchemaError(f"{path}: both {bound} and {excl}")
            out[bound] = value
            out[excl] = True
    return out


def _object_children(
    node: dict[str, Any], out: dict[str, Any], defs: dict[str, Any], path: str, preserve: bool
) -> None:
    """An object's properties, or its map values, or (marked) free-form content."""
    out["type"] = "object"
    if "properties" in node:
        out["properties"] = {
            name: structural(child, defs, f"{path}.{name}")
            for name, child in node["properties"].items()
        }
        if not out["properties"]:
            del out["properties"]
    extra = node.get("additionalProperties")
    if preserve:
        out[PRESERVE] = True
    elif isinstance(extra, dict) and extra:
        if "properties" in out:
            raise SchemaError(f"{path}: properties and additionalProperties together")
        out["additionalProperties"] = structural(extra, defs, f"{path}.*")
    elif extra is True or extra == {}:
        raise SchemaError(
            f"{path or '.'}: free-form object; mark the field with"
            f" json_schema_extra={{{PRESERVE!r}: True}} if that is intended"
        )
    elif "properties" not in out:
        raise SchemaError(f"{path or '.'}: object without properties")


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    return structural(json_schema(model))


# --------------------------------------------------------------------------
# CRDs
# --------------------------------------------------------------------------

_COMMON_LABELS = {
    "app.kubernetes.io/name": "keras-operator",
    "app.kubernetes.io/part-of": "keras-operator",
}


def _metadata_schema() -> dict[str, Any]:
    """``metadata`` may only constrain ``name``: the rules of :class:`kerasop.spec.ObjectMeta`.

    Resource names become parts of child names (Jobs, Services, label values), so they are
    held to the same DNS-label rules the local CLI applies.
    """
    name = structural(json_schema(spec_models.ObjectMeta)["properties"]["name"])
    return {"type": "object", "properties": {"name": name}}


def _crd(
    *,
    kind: str,
    plural: str,
    short: str,
    description: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[dict[str, Any]],
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec_schema = model_schema(spec_model)
    status_schema = model_schema(status_model)
    root = {
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation"
                " of an object.",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this"
                " object represents.",
                "type": "string",
            },
            "metadata": _metadata_schema(),
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": dict(_COMMON_LABELS)},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def training_job_crd() -> dict[str, Any]:
    return _crd(
        kind="KerasTrainingJob",
        plural="kerastrainingjobs",
        short="ktj",
        description=(
            "KerasTrainingJob trains a Keras model from data on a volume and writes a new,"
            " versioned model to the model store. Progress and final metrics are reported"
            " in status."
        ),
        spec_model=spec_models.KerasTrainingJobSpec,
        status_model=status_models.KerasTrainingJobStatus,
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {
                "name": "Epoch",
                "type": "string",
                "jsonPath": ".status.progress",
                "description": "Completed epochs / planned epochs.",
            },
            {
                "name": "Accuracy",
                "type": "number",
                "jsonPath": ".status.display.accuracy",
                "description": "Accuracy (4 digits): final, else the last epoch's; validation"
                " where there is validation data.",
            },
            {
                "name": "Loss",
                "type": "number",
                "jsonPath": ".status.display.loss",
                "description": "Loss (4 digits): final, else the last epoch's; validation"
                " where there is validation data.",
            },
            {
                "name": "Version",
                "type": "integer",
                "jsonPath": ".status.modelVersion",
                "description": "Model version written by this job.",
            },
            {
                "name": "Trials",
                "type": "string",
                "jsonPath": ".status.tuning.trials",
                "description": "A search (spec.tuning): trials ended / maxTrials.",
            },
            {
                "name": "Best",
                "type": "string",
                "jsonPath": ".status.tuning.best",
                "description": "A search: the best trial's objective.",
            },
            {
                "name": "Model",
                "type": "string",
                "jsonPath": ".status.modelName",
                "priority": 1,
            },
            {
                "name": "Measured-On",
                "type": "string",
                "jsonPath": ".status.display.measuredOn",
                "description": "Data the shown accuracy and loss were measured on.",
                "priority": 1,
            },
            {
                "name": "Queue",
                "type": "string",
                "jsonPath": ".status.queue.localQueue",
                "description": "Kueue LocalQueue (spec.queueName); status.conditions Admitted"
                " says what Kueue decided.",
                "priority": 1,
            },
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": ".status.failure.reason",
                "priority": 1,
            },
            _age(),
        ],
    )


def model_service_crd() -> dict[str, Any]:
    return _crd(
        kind="KerasModelService",
        plural="kerasmodelservices",
        short="kms",
        description=(
            "KerasModelService serves a Keras model from the model store over HTTP (TF Serving"
            " REST v1 and the Open Inference Protocol v2), following a training job's latest"
            " version or a pinned one."
        ),
        spec_model=spec_models.KerasModelServiceSpec,
        status_model=status_models.KerasModelServiceStatus,
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": ".status.ready",
                "description": "Ready server pods / server pods.",
            },
            {
                "name": "Version",
                "type": "integer",
                "jsonPath": ".status.servingVersion",
                "description": "Model version being served.",
            },
            {
                "name": "Rollout",
                "type": "string",
                "jsonPath": ".status.rollout.state",
                "description": "Stable, Shadow, Canary 10%, Refused or RolledBack.",
            },
            {"name": "URL", "type": "string", "jsonPath": ".status.url"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
            {"name": "Model", "type": "string", "jsonPath": ".status.modelName", "priority": 1},
            _age(),
        ],
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    )


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object."""
    return {
        "kerastrainingjobs.yaml": training_job_crd(),
        "kerasmodelservices.yaml": model_service_crd(),
    }
