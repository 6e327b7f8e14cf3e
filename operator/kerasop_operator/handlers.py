"""kopf handlers: thin, they only decide when to reconcile (see controller.py for what).

Importing this module registers the handlers with kopf's default registry.

Triggers:

- KerasTrainingJob created/changed/found at start-up -> full reconcile;
- its trainer Job changes (pods start, finish, fail) -> status refresh
  (with Kueue support on, so does the Job's Kueue Workload: queued, admitted, preempted)
  (and a trainer pod that cannot start -- unschedulable, image pull -> status refresh);
  (a deleted Job -> full reconcile, which recreates it unless the job finished);
- every ``progress_interval`` s (settings.py) while Pending/Running -> status refresh
  with the trainer's log tail (epoch, metrics);
- a job's model version changes -> reconcile of every KerasModelService
  following it;
- KerasModelService created/changed/found at start-up, or its Deployment or
  Service changes -> full reconcile (drift is corrected, rollout tracked);
- every ``rollout_interval`` s (settings.py) while a shadow or canary runs -> full
  reconcile (the rollout step reads the server pods' per-version metrics);
- every ``store_check_interval`` s while a service's model is in a bucket (its status has a
  ModelStoreReachable condition) -> status refresh (reads the server pods' store errors).

The periodic triggers are not kopf timers (those need a finalizer, added in a round trip
of its own before the first reconcile): the watch events say which objects are active and
periodic.py runs them (``periodic_work``, started with the operator).

No handler returns a value (kopf would store it in ``status``); status is
written explicitly by the controller through the status subresource.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import kopf

from kerasop.spec import GROUP, VERSION

from . import kube as kube_kinds
from . import metrics, training
from .common import LABEL_MANAGED_BY, LABEL_MODEL_SERVICE, LABEL_TRAINING_JOB, MANAGER
from .controller import Controller, ReconcileError
from .kube import ApiError, Kube
from .periodic import Periodic
from .serving import KIND as SERVICE_KIND
from .serving import PLURAL as SERVICES
from .serving import STORE_CONDITION
from .settings import Config
from .training import KIND as JOB_KIND
from .training import PLURAL as JOBS

logger = logging.getLogger(__name__)

PREFIX = "kerasop.io"


def post_event(body: dict[str, Any], type: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type, reason=reason, message=message[:1024])


def configure_settings(settings: kopf.OperatorSettings, config: Config) -> None:
    """kopf settings: our own annotation prefix, no status stanza, no handler-log events."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # kopf waits this long for its own annotation patch to come back through the watch
    # before it processes a newer event; with a backlog (a thousand objects created at once)
    # the default 5 s ran out and create handlers ran a second time on a stale body.
    settings.persistence.consistency_timeout = 60
    # Memory at scale: kopf runs one worker per object with events. A thousand objects
    # created at once all waited for the handler threads together, each holding its body
    # and kopf's diff of it (213 MB at 1000 jobs, docs/performance.md). Now four times as many
    # objects as handler threads are processed at once, the others wait as raw events, and a
    # worker frees its place half a second after its object's last event (kopf: 5 s).
    settings.queueing.worker_limit = 4 * config.max_workers
    settings.queueing.idle_timeout = 0.5
    settings.posting.loggers = False  # only the explicit kopf.event() calls become Events
    settings.execution.max_workers = config.max_workers
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.request_timeout = 60
    # Watching CustomResourceDefinitions needs a cluster-wide grant that nothing else
    # needs; the CRDs are a prerequisite instead (checked at start-up, see below).
    settings.scanning.disabled = not config.scan_crds


@kopf.on.startup()
def startup(memo: Any, **_: Any) -> None:
    config = _controller(memo).config
    for periodic in memo.periodic.values():
        periodic.start()
    logger.info(
        "kerasop operator started (runtime image %r, serving image %r, progress interval %ss)",
        config.runtime_image,
        config.serving_image or config.runtime_image,
        config.progress_interval,
    )


@kopf.on.cleanup()
def cleanup(memo: Any, **_: Any) -> None:
    for periodic in memo.periodic.values():
        periodic.stop()


def missing_crds(kube: Kube, namespaces: Sequence[str]) -> list[str]:
    """The kerasop resources the API server does not serve (CRDs not installed yet).

    Lists each kind once (one item, in the first watched namespace or cluster-wide),
    which the operator's own RBAC allows: an unserved resource answers 404.
    """
    namespace = namespaces[0] if namespaces else None
    kinds = {JOBS: kube_kinds.TRAINING_JOB, SERVICES: kube_kinds.MODEL_SERVICE}
    return sorted(plural for plural, kind in kinds.items() if not kube.served(kind, namespace))


def _controller(memo: Any) -> Controller:
    """The controller ``main`` put into kopf's ``memo`` (with the settings in ``.config``)."""
    ctl: Controller | None = getattr(memo, "controller", None)
    if ctl is None:
        raise kopf.TemporaryError("operator not started yet", delay=1)
    return ctl


def _namespace(namespace: str | None) -> str:
    """Both kinds are namespaced: kopf passes None only for cluster-scoped objects."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced resource without a namespace")
    return namespace


def _retry(exc: Exception, delay: float) -> kopf.TemporaryError | kopf.PermanentError:
    """How kopf goes on after a failed reconcile: retry later, or wait for a change."""
    if isinstance(exc, ReconcileError):
        if exc.permanent:  # retrying the same spec fails the same way (and posts a Warning)
            return kopf.PermanentError(str(exc))
        return kopf.TemporaryError(str(exc), delay=delay * 2)
    return kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=delay)


def _owner_name(body: dict[str, Any], kind: str) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == kind
            and ref.get("apiVersion", "").startswith(f"{GROUP}/")
        ):
            name: str | None = ref.get("name")
            return name
    return None


def _child_event(
    owner_kind: str,
    child: str,
    child_text: str,
    type: str | None,
    body: Any,
    memo: Any,
    refresh: Callable[[Controller, str, str], None],
) -> None:
    """A watched child of ours changed: ``refresh(ctl, namespace, owner)`` its owner.

    Failures are logged, not retried: the next event or reconcile catches up.
    """
    parent = _owner_name(body, owner_kind)
    namespace = body.get("metadata", {}).get("namespace")
    if parent is None or namespace is None:
        return
    ctl = _controller(memo)
    try:
        with metrics.reconcile(owner_kind, f"{child}-{(type or 'listed').lower()}"):
            refresh(ctl, namespace, parent)
    except (ApiError, ReconcileError, OSError) as exc:
        logger.warning(
            "refresh of %s/%s after a %s event failed: %s", namespace, parent, child_text, exc
        )


# ============================================================================================
# KerasTrainingJob


def _training_active(body: Any, **_: Any) -> bool:
    status = body.get("status") or {}
    return not (body.get("spec") or {}).get("suspend") and status.get("phase") in (
        None,
        "Pending",
        "Running",
    )


@kopf.on.resume(GROUP, VERSION, JOBS, id="job-resume")
@kopf.on.create(GROUP, VERSION, JOBS, id="job-create")
@kopf.on.update(GROUP, VERSION, JOBS, id="job-update")
def training_job_changed(
    name: str, namespace: str | None, reason: Any, memo: Any, body: Any, **_: Any
) -> None:
    ctl, namespace = _controller(memo), _namespace(namespace)
    trigger = str(getattr(reason, "value", reason))
    try:
        with metrics.reconcile(JOB_KIND, trigger):
            result = ctl.reconcile_training(namespace, name)
    except (ApiError, ReconcileError, OSError) as exc:
        raise _retry(exc, ctl.config.retry_delay) from exc
    if result.template_drift and trigger == "update":
        post_event(
            dict(body),
            "Warning",
            "ChangeNotApplied",
            "resources, scheduling and image changes apply to a running trainer only after it is"
            " suspended (spec.suspend: true) and resumed",
        )


def training_job_progress(ctl: Controller, namespace: str, name: str) -> None:
    """Periodic, while the job is Pending or Running: status with the trainer's log tail."""
    try:
        with metrics.reconcile(JOB_KIND, "progress"):
            ctl.sync_training_status(namespace, name, read_logs=True)
    except (ApiError, OSError) as exc:
        logger.warning("progress refresh of %s/%s failed: %s", namespace, name, exc)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
def trainer_job_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    if type == "ADDED":
        # Only the operator creates trainer Jobs, and the reconcile that did wrote the status
        # from it: a refresh here would repeat it (1000 jobs applied at once: ~1000 queued
        # refreshes that delayed every other object's first reconcile). At start-up kopf lists
        # (type None), which does refresh.
        return

    def refresh(ctl: Controller, namespace: str, parent: str) -> None:
        if type == "DELETED":
            ctl.reconcile_training(namespace, parent)
        else:
            ctl.sync_training_status(namespace, parent)

    _child_event(JOB_KIND, "job", "Job", type, body, memo, refresh)


def _trainer_pod_stuck(body: Any, **_: Any) -> bool:
    return (body.get("status") or {}).get("phase") == "Pending" and bool(
        training.pod_stuck_detail(dict(body))
    )


@kopf.on.event(
    "v1",
    "pods",
    labels={LABEL_TRAINING_JOB: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER},
    when=_trainer_pod_stuck,
)
def trainer_pod_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    """A trainer pod cannot start (unschedulable, image pull): say why in its job's status
    now, not at the next progress tick (a short job may hold the only GPU for less)."""
    _refresh_job_of(type, body, memo, "pod-stuck")


def _refresh_job_of(type: str | None, body: Any, memo: Any, trigger: str) -> None:
    """Refresh the status of the KerasTrainingJob whose trainer Job owns ``body``."""
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace")
    owner: dict[str, Any] = next(
        (r for r in meta.get("ownerReferences") or [] if r.get("controller")), {}
    )
    if type == "DELETED" or namespace is None or owner.get("kind") != "Job":
        return
    ctl = _controller(memo)
    try:
        trainer = ctl.kube.get(kube_kinds.JOB, namespace, owner["name"])
        parent = trainer and _owner_name(trainer, JOB_KIND)
        if parent:
            with metrics.reconcile(JOB_KIND, trigger):
                ctl.sync_training_status(namespace, parent)
    except (ApiError, ReconcileError, OSError) as exc:
        logger.warning("refresh after %s %s failed: %s", trigger, meta.get("name"), exc)


def workload_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    """Kueue queued, admitted, preempted or deactivated a trainer Job's Workload: say so in
    its job's status now (registered by ``watch_workloads``, with Kueue support on)."""
    _refresh_job_of(type, body, memo, "workload")


def watch_workloads() -> None:
    """Follow Kueue's Workloads (``Config.kueue``; the chart grants the reads only then)."""
    kopf.on.event(training.WORKLOAD_GROUP, training.WORKLOAD_VERSION, "workloads")(workload_event)


@kopf.on.event(GROUP, VERSION, JOBS)
def training_job_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    """Follow model versions: services pinned to a job's output roll forward."""
    _track(memo, "progress", type, body, _training_active(body))
    metrics.observe_training_job(dict(body), deleted=type == "DELETED")
    ctl = _controller(memo)
    try:
        names = ctl.training_job_seen(dict(body), deleted=type == "DELETED")
    except (ApiError, ReconcileError, OSError) as exc:
        logger.warning(
            "updating services following %s failed: %s", body.get("metadata", {}).get("name"), exc
        )
        # Forget what we saw so that the next event retries.
        meta = body.get("metadata", {})
        ctl._seen_models.pop((meta.get("namespace") or "", meta.get("name") or ""), None)
        return
    if names:
        logger.info("model of %s changed: reconciled services %s", body["metadata"]["name"], names)


# ============================================================================================
# KerasModelService


@kopf.on.resume(GROUP, VERSION, SERVICES, id="service-resume")
@kopf.on.create(GROUP, VERSION, SERVICES, id="service-create")
@kopf.on.update(GROUP, VERSION, SERVICES, id="service-update")
def model_service_changed(
    name: str, namespace: str | None, reason: Any, memo: Any, **_: Any
) -> None:
    ctl, namespace = _controller(memo), _namespace(namespace)
    trigger = str(getattr(reason, "value", reason))
    try:
        with metrics.reconcile(SERVICE_KIND, trigger):
            ctl.reconcile_service(namespace, name)
    except (ApiError, ReconcileError, OSError) as exc:
        raise _retry(exc, ctl.config.retry_delay) from exc


def _rollout_active(body: Any, **_: Any) -> bool:
    return ((body.get("status") or {}).get("rollout") or {}).get("phase") in ("Shadow", "Canary")


def model_service_rollout(ctl: Controller, namespace: str, name: str) -> None:
    """Periodic, while a shadow or canary runs: read the server pods' metrics, step, maybe
    roll back."""
    try:
        with metrics.reconcile(SERVICE_KIND, "rollout"):
            ctl.reconcile_service(namespace, name)
    except (ApiError, ReconcileError, OSError) as exc:
        logger.warning("rollout step of %s/%s failed: %s", namespace, name, exc)


def _store_checked(body: Any, **_: Any) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == STORE_CONDITION for c in conditions)


def model_service_store_check(ctl: Controller, namespace: str, name: str) -> None:
    """Periodic, while the model is in a bucket: read what the server pods last saw of the
    store into the ModelStoreReachable condition."""
    try:
        with metrics.reconcile(SERVICE_KIND, "store-check"):
            ctl.sync_service_status(namespace, name)
    except (ApiError, OSError) as exc:
        logger.warning("store check of %s/%s failed: %s", namespace, name, exc)


def periodic_work(ctl: Controller) -> dict[str, Periodic]:
    """The periodic work by name (``main`` puts it into kopf's memo as ``periodic``)."""
    config = ctl.config
    work = {
        "progress": (config.progress_interval, training_job_progress),
        "rollout": (config.rollout_interval, model_service_rollout),
        "store": (config.store_check_interval, model_service_store_check),
    }
    return {
        name: Periodic(name, interval, partial(fn, ctl), config.max_workers)
        for name, (interval, fn) in work.items()
    }


def _track(memo: Any, work: str, type: str | None, body: Any, active: bool) -> None:
    """Keep ``memo.periodic[work]`` told whether this object needs its periodic work."""
    periodic = getattr(memo, "periodic", {}).get(work)
    meta = body.get("metadata") or {}
    if periodic is not None and meta.get("namespace") and meta.get("name"):
        periodic.track(meta["namespace"], meta["name"], active and type != "DELETED")


@kopf.on.event(GROUP, VERSION, SERVICES)
def model_service_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    _track(memo, "rollout", type, body, _rollout_active(body))
    _track(memo, "store", type, body, _store_checked(body))


def _service_child_event(kind: str, type: str | None, body: Any, memo: Any) -> None:
    def refresh(ctl: Controller, namespace: str, parent: str) -> None:
        if type in ("ADDED", None) and kind == "deployment":
            ctl.sync_service_status(namespace, parent)
        else:
            ctl.reconcile_service(namespace, parent)

    _child_event(SERVICE_KIND, kind, kind, type, body, memo, refresh)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={LABEL_MODEL_SERVICE: kopf.PRESENT, "app.kubernetes.io/managed-by": MANAGER},
)
def server_deployment_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    _service_child_event("deployment", type, body, memo)


@kopf.on.event(
    "v1",
    "services",
    labels={LABEL_MODEL_SERVICE: kopf.PRESENT, "app.kubernetes.io/managed-by": MANAGER},
)
def server_service_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    if type in ("DELETED", "MODIFIED"):
        _service_child_event("service", type, body, memo)
