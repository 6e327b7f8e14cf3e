"""Names, labels and small pure helpers shared by the training and serving builders.

Everything here is deterministic: the same input always gives the same names,
labels and hashes, which is what makes reconciling idempotent (a retried or
restarted handler computes exactly the same children and finds them).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from kerasop.spec import API_VERSION, GROUP, VERSION, SpecError, describe_errors

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
]

MANAGER = "kerasop-operator"  # app.kubernetes.io/managed-by and the SSA field manager
PART_OF = "keras-operator"

# Labels on every child. `app.kubernetes.io/instance` is deliberately NOT used:
# Argo CD tracks its applications with that label by default, and copying it onto
# children would make Argo CD prune them as "extraneous" resources.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_TRAINING_JOB = "kerasop.io/training-job"
LABEL_MODEL_SERVICE = "kerasop.io/model-service"
LABEL_MODEL_CLAIM = "kerasop.io/model-claim"

ANN_TEMPLATE_HASH = "kerasop.io/template-hash"
ANN_MODEL_NAME = "kerasop.io/model-name"
ANN_MODEL_VERSION = "kerasop.io/model-version"
ANN_ROLLOUT_PLAN = "kerasop.io/rollout-plan"  # on server pods: digest of the plan last delivered

RUN_AS_USER = 1000
GPU_RESOURCE = "nvidia.com/gpu"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"

MAX_NAME = 63  # DNS label: Job/Service names, pod hostnames, label values


def short_hash(obj: Any, length: int = 10) -> str:
    """A stable hash of any JSON-able value (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def child_name(base: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """``<base><suffix>``, shortened deterministically when longer than ``limit``.

    A long base keeps its head, gets a 5-character hash of the full name and then
    the suffix, so two long names never collide and the suffix stays readable.
    """
    full = f"{base}{suffix}"
    if len(full) <= limit:
        return full
    digest = short_hash(full, 5)
    head = base[: max(1, limit - len(suffix) - len(digest) - 1)].rstrip("-")
    return f"{head}-{digest}{suffix}"


def label_value(value: str) -> str:
    """A label value (<= 63 characters) standing for ``value``."""
    return child_name(value, "", MAX_NAME)


def common_labels(component: str) -> dict[str, str]:
    return {
        LABEL_NAME: PART_OF,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: PART_OF,
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The controller owner reference of a child (as ``kopf.append_owner_reference`` writes it)."""
    import kopf

    child: dict[str, Any] = {}
    kopf.append_owner_reference(child, owner=cast("kopf.Body", owner))
    ref: dict[str, Any] = child["metadata"]["ownerReferences"][0]
    return ref


def child_metadata(
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    owner: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``metadata`` of an owned child: a copy of ``labels``, optional annotations, the owner."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations is not None:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [owner]
    return meta


M = TypeVar("M", bound=BaseModel)


def parse_resource(model: type[M], kind: str, body: dict[str, Any]) -> M:
    """``body`` validated as ``model`` (only apiVersion, kind, name/namespace/labels and spec).

    Raises ``SpecError`` when the spec does not validate.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(
            {
                "apiVersion": body.get("apiVersion", API_VERSION),
                "kind": kind,
                "metadata": {
                    "name": body["metadata"]["name"],
                    "namespace": body["metadata"].get("namespace"),
                    "labels": body["metadata"].get("labels"),
                },
                "spec": body.get("spec") or {},
            }
        )
    except ValidationError as exc:
        raise SpecError(describe_errors(exc)) from None


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid: str | None = ref.get("uid")
            return uid
    return None


# --------------------------------------------------------------------------------------------
# Merging the user's pod template override


def _named_items(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def deep_merge(base: Any, override: Any) -> Any:
    """Merge ``override`` into a copy of ``base``.

    Dicts merge recursively; a ``None`` value in the override deletes the key;
    lists of named objects (containers, volumes, env, volumeMounts, ports) merge
    item by item on ``name`` (unknown names are appended); any other list or
    value is replaced by the override.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if _named_items(base) and _named_items(override):
        out_list = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out_list)}
        for item in override:
            if item["name"] in index:
                out_list[index[item["name"]]] = deep_merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(override)


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (``{}`` if equal).

    Keys in ``old`` but not in ``new`` are set to ``None`` (merge-patch delete), also one
    level down (``metrics``, ``display``): a merge patch merges objects, so a stale key
    there would stay.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = {**value, **{k: None for k in before if k not in value}}
        else:
            patch[key] = value
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch
