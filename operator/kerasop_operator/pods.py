"""Pod template pieces shared by trainer and server pods (pure functions)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from kerasop.objstore import GCS_KEY, credential_env, gcs_key_env
from kerasop.spec import ObjectStoreSpec, PodSpecOverrides, ResourcesSpec

from .common import (
    GPU_RESOURCE,
    HOSTNAME_TOPOLOGY,
    LABEL_MODEL_CLAIM,
    RUN_AS_USER,
    deep_merge,
    label_value,
)

TMP_VOLUME = "tmp"
MODELS_VOLUME = "models"
DATA_VOLUME = "data"

RWO_MODES = ("ReadWriteOnce", "ReadWriteOncePod")
# Where store.gcsSecretName is mounted, one folder per role (data and models may be different
# accounts).
GCS_KEY_ROOT = "/var/run/secrets/kerasop"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        # Volumes that support ownership management become writable for the user.
        "fsGroup": RUN_AS_USER,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def scratch_volume(name: str) -> dict[str, Any]:
    """An emptyDir standing in for a claim: a model store in a bucket is staged here."""
    return {"name": name, "emptyDir": {}}


def store_credentials_env(role: str, store: ObjectStoreSpec | None) -> list[dict[str, Any]]:
    """The keys of ``store.secretName`` as the pod's env for ``role`` (``DATA``, ``MODELS``):
    secretKeyRefs, so the values never pass through the operator, its status or events; and
    where ``store.gcsSecretName``'s key file is mounted (:func:`store_key_volumes`)."""
    if store is None:
        return []
    env: list[dict[str, Any]] = []
    if store.secret_name is not None:
        env += [
            {
                "name": name,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": store.secret_name,
                        "key": key,
                        **({"optional": True} if key == "AWS_SESSION_TOKEN" else {}),
                    }
                },
            }
            for key, name in credential_env(role).items()
        ]
    if store.gcs_secret_name is not None:
        env.append({"name": gcs_key_env(role), "value": f"{_gcs_key_dir(role)}/{GCS_KEY}"})
    return env


def _gcs_key_dir(role: str) -> str:
    return f"{GCS_KEY_ROOT}/{role.lower()}"


def _gcs_key_volume(role: str) -> str:
    return f"{role.lower()}-gcs-key"


def store_key_volumes(role: str, store: ObjectStoreSpec | None) -> list[dict[str, Any]]:
    """``store.gcsSecretName``'s key file as a volume (google-auth reads credentials from a
    file), readable by owner and group only: the group is the pod's fsGroup, its user's."""
    if store is None or store.gcs_secret_name is None:
        return []
    secret = {
        "secretName": store.gcs_secret_name,
        "items": [{"key": GCS_KEY, "path": GCS_KEY}],
        "defaultMode": 0o440,
    }
    return [{"name": _gcs_key_volume(role), "secret": secret}]


def store_key_mounts(role: str, store: ObjectStoreSpec | None) -> list[dict[str, Any]]:
    """The read-only mount of :func:`store_key_volumes`."""
    if store is None or store.gcs_secret_name is None:
        return []
    return [{"name": _gcs_key_volume(role), "mountPath": _gcs_key_dir(role), "readOnly": True}]


def container_resources(res: ResourcesSpec) -> dict[str, Any]:
    """cpu/memory as request = limit; GPUs as limits (requests follow for extended resources)."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.cpu:
        requests["cpu"] = limits["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if res.gpus:
        limits[GPU_RESOURCE] = str(res.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def gpu_toleration() -> dict[str, Any]:
    return {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def colocation_affinity(claim_name: str) -> dict[str, Any]:
    """Required pod affinity: schedule next to the other pods using this RWO claim.

    The first pod has nobody to be next to; the scheduler then accepts it
    anywhere because it matches its own term.
    """
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {LABEL_MODEL_CLAIM: label_value(claim_name)}},
                    "topologyKey": HOSTNAME_TOPOLOGY,
                }
            ]
        }
    }


def spread_over_nodes(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Prefer one replica per node, so a node's failure, drain or kubelet restart (which
    resets every readiness probe on that node) leaves the other replicas serving.

    ``ScheduleAnyway``: a cordoned or full node must not block a rollout or a drain.
    """
    return [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME_TOPOLOGY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]


def needs_colocation(access_modes: Sequence[str] | None) -> bool:
    """True when every pod sharing the claim must run on one node."""
    modes = set(access_modes or [])
    return (
        bool(modes)
        and not (modes & {"ReadWriteMany", "ReadOnlyMany"})
        and bool(modes & set(RWO_MODES))
    )


def merge_affinity(
    user: dict[str, Any] | None, extra: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The user's affinity plus ours; required pod-affinity terms are appended, not replaced."""
    if not extra:
        return copy.deepcopy(user) if user else None
    out = copy.deepcopy(user or {})
    terms = extra["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    pod_affinity = out.setdefault("podAffinity", {})
    existing = pod_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", [])
    for term in terms:
        if term not in existing:
            existing.append(copy.deepcopy(term))
    return out


def apply_scheduling(
    pod_spec: dict[str, Any],
    sched: PodSpecOverrides,
    *,
    gpus: int,
    default_service_account: str,
    extra_affinity: dict[str, Any] | None = None,
) -> None:
    """Copy the scheduling knobs of the spec onto ``pod_spec`` (in place)."""
    pod_spec["serviceAccountName"] = sched.service_account_name or default_service_account
    pod_spec["automountServiceAccountToken"] = False
    if sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    tolerations = [copy.deepcopy(t) for t in sched.tolerations or []]
    if gpus and gpu_toleration() not in tolerations:
        tolerations.append(gpu_toleration())
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = merge_affinity(sched.affinity, extra_affinity)
    if affinity:
        pod_spec["affinity"] = affinity
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name


def apply_override(template: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Merge the user's ``scheduling.podTemplate`` into a generated pod template.

    The override has the shape of a pod template (``metadata``, ``spec``); keys
    outside those two are taken as pod spec fields, so ``{containers: [...]}``
    and ``{spec: {containers: [...]}}`` mean the same.
    """
    if not override:
        return template
    shaped: dict[str, Any] = {"metadata": {}, "spec": {}}
    for key, value in override.items():
        if key in ("metadata", "spec") and isinstance(value, dict):
            shaped[key].update(value)
        else:
            shaped["spec"][key] = value
    merged: dict[str, Any] = deep_merge(template, shaped)
    return merged
