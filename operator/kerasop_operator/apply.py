"""Writing child objects: server-side apply, create-if-missing, shared, absent.

The API server decides whether anything changed: a server-side apply or a
merge patch that matches the live object writes nothing and leaves its
``resourceVersion`` as it was. Re-running a reconcile with the same spec is
therefore a no-op (``kubectl apply`` of the same YAML, an Argo CD re-sync,
an operator restart).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Literal

from . import metrics
from .common import LABEL_MANAGED_BY, MANAGER, controller_uid, owner_reference
from .kube import ApiError, Client, Kind, kind_of

logger = logging.getLogger(__name__)

Action = Literal["created", "patched", "unchanged", "exists", "deleted", "absent"]


class ChildConflict(Exception):
    """A child's name is taken by an object this owner does not control."""


def _ident(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"


def _version(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def check_owner(live: dict[str, Any], desired: dict[str, Any]) -> None:
    want = controller_uid(desired)
    if want is None:
        return
    have = controller_uid(live)
    if have != want:
        raise ChildConflict(
            f"{_ident(live)} exists and is not controlled by this object"
            + (f" (controller uid {have})" if have else " (no controller)")
        )


def ensure_applied(kube: Client, desired: dict[str, Any]) -> tuple[Action, dict[str, Any]]:
    """Server-side apply ``desired`` (after checking that the live object is ours)."""
    kind = kind_of(desired)
    meta = desired["metadata"]
    live = kube.get(kind, meta.get("namespace"), meta["name"])
    if live is not None:
        check_owner(live, desired)
    result = kube.apply(desired)
    if live is not None and _version(result) == _version(live):
        return "unchanged", result
    action: Action = "created" if live is None else "patched"
    metrics.CHILD_WRITES.labels(kind=kind.kind, action=action).inc()
    logger.info("%s %s", action, _ident(desired))
    return action, result


_check_owner = check_owner  # ensure_created's keyword argument shadows the name


def ensure_created(
    kube: Client, desired: dict[str, Any], *, check_owner: bool = True
) -> tuple[Action, dict[str, Any]]:
    """Create ``desired`` if missing; an existing object is left alone (PVCs, service accounts)."""
    kind = kind_of(desired)
    meta = desired["metadata"]
    live = kube.get(kind, meta.get("namespace"), meta["name"])
    if live is not None:
        if check_owner:
            _check_owner(live, desired)
        return "exists", live
    try:
        result = kube.create(desired)
    except ApiError as exc:
        if exc.conflict:  # created concurrently: fine, it exists now
            live = kube.get(kind, meta.get("namespace"), meta["name"])
            if live is not None:
                return "exists", live
        raise
    metrics.CHILD_WRITES.labels(kind=kind.kind, action="created").inc()
    logger.info("created %s", _ident(desired))
    return "created", result


def ensure_shared(
    kube: Client, desired: dict[str, Any], owner: dict[str, Any]
) -> tuple[Action, dict[str, Any]]:
    """Create-or-adopt an object many owners share (the pods' service accounts).

    Each user adds a non-controller owner reference, so the garbage collector
    removes the object with its last user (``helm uninstall`` leaves nothing).
    An object another tool manages (no ``managed-by`` label of ours, e.g. the
    chart's own service accounts) is used as it is.
    """
    ref = {**owner_reference(owner), "controller": False, "blockOwnerDeletion": False}
    desired = copy.deepcopy(desired)
    desired["metadata"]["ownerReferences"] = [ref]
    action, live = ensure_created(kube, desired, check_owner=False)
    meta = live["metadata"]
    ours = (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGER
    refs = meta.get("ownerReferences") or []
    if action == "created" or not ours or any(r.get("uid") == ref["uid"] for r in refs):
        return action, live
    # Merged on the server: many owners' reconciles run at once (a thousand jobs created
    # together) and a read-modify-write of the list dropped references of the others.
    patched = kube.add_owner_reference(kind_of(live), meta.get("namespace"), meta["name"], ref)
    metrics.CHILD_WRITES.labels(kind=kind_of(live).kind, action="patched").inc()
    return "patched", patched


def ensure_patched_fields(
    kube: Client,
    live: dict[str, Any],
    desired: dict[str, Any],
    fields: tuple[str, ...],
) -> tuple[Action, dict[str, Any]]:
    """Merge-patch only ``spec.<fields>`` and our labels of an existing object.

    For objects whose spec is mostly immutable (a Job's pod template): the
    mutable fields follow the spec, the rest stays as created. A field the
    desired object leaves out is removed (merge-patch ``null``).
    """
    check_owner(live, desired)
    kind = kind_of(desired)
    meta = desired["metadata"]
    want_spec = {f: desired["spec"].get(f) for f in fields}
    want = {"metadata": {"labels": meta.get("labels") or {}}, "spec": want_spec}
    result = kube.merge_patch(kind, meta.get("namespace"), meta["name"], want)
    if _version(result) == _version(live):
        return "unchanged", result
    metrics.CHILD_WRITES.labels(kind=kind.kind, action="patched").inc()
    logger.info("patched %s (%s)", _ident(desired), ", ".join(fields))
    return "patched", result


def ensure_absent(kube: Client, kind: Kind, namespace: str, name: str, owner_uid: str) -> Action:
    """Delete a child that is no longer wanted (an HPA or PDB turned off), if we own it."""
    live = kube.get(kind, namespace, name)
    if live is None:
        return "absent"
    if controller_uid(live) != owner_uid:
        return "absent"  # not ours: never delete someone else's object
    kube.delete(kind, namespace, name)
    metrics.CHILD_WRITES.labels(kind=kind.kind, action="deleted").inc()
    logger.info("deleted %s %s/%s (no longer wanted)", kind.kind, namespace, name)
    return "deleted"
