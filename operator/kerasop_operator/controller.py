"""Reconcile logic: read the cluster, call the pure builders, write what differs.

The kopf handlers (``handlers.py``) only decide *when* to call these methods;
every method is level-based (it re-reads everything it needs) and idempotent,
so calling it twice, concurrently, or after a restart converges to one set of
children and one status.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kerasop import rollout
from kerasop.server_metrics import parse_server_metrics, store_error
from kerasop.spec import SpecError
from kerasop.status import now_rfc3339

from . import apply, kube, metrics, serving, training
from .common import LABEL_TRAINING_JOB, controller_uid, label_value, status_patch
from .kube import ApiError
from .settings import Config

logger = logging.getLogger(__name__)

# The rollout's clock (a test moves it instead of sleeping through dwell times).
clock = time.time

# post_event(owner_body, type, reason, message)
EventPoster = Callable[[dict[str, Any], str, str, str], None]


@dataclass
class TrainingResult:
    spec_error: str | None = None
    template_drift: bool = False  # the running Job was made from an older template
    recreated: bool = False  # a suspended Job was replaced to apply template changes


class ReconcileError(Exception):
    """A child could not be written for a reason a retry alone will not fix soon.

    ``permanent``: only a change of the resource can fix it (the API server refused the
    child itself), so the operator stops retrying until the resource changes.
    """

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.permanent = permanent


def _apply_failure(exc: Exception) -> ReconcileError | None:
    """The user-facing failure for an error while writing children (None: just retry)."""
    if isinstance(exc, apply.ChildConflict):
        return ReconcileError("NameConflict", str(exc))
    if isinstance(exc, ApiError) and not exc.transient:
        return ReconcileError(
            "ApplyFailed",
            f"{exc.reason or exc.status}: {exc.message}",
            permanent=exc.status in (400, 422),  # BadRequest / Invalid: the object itself
        )
    return None


def _standing_apply_error(body: dict[str, Any]) -> str | None:
    """The ApplyFailed message reported for the current generation, if any.

    A refused child is not retried until the spec changes, so a status refresh in
    between (progress timer, Job events) must keep reporting it.
    """
    st = body.get("status") or {}
    if st.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        return None
    for c in st.get("conditions") or []:
        if c.get("type") == "Created" and c.get("reason") == "ApplyFailed":
            return c.get("message") or "the API server refused the trainer's objects"
    return None


def _deleting(body: dict[str, Any]) -> bool:
    return bool((body.get("metadata") or {}).get("deletionTimestamp"))


def _terminal(body: dict[str, Any]) -> bool:
    """Finished for good: never recreate its trainer (an InvalidSpec failure can be fixed)."""
    st = body.get("status") or {}
    if st.get("phase") == "Succeeded":
        return True
    return st.get("phase") == "Failed" and (st.get("failure") or {}).get("reason") != "InvalidSpec"


@dataclass
class Controller:
    kube: Any  # kube.Kube or a test double with the same methods
    config: Config = field(default_factory=Config)
    post_event: EventPoster = lambda *_: None
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _seen_models: dict[tuple[str, str], Any] = field(default_factory=dict)

    def _lock(self, kind: str, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((kind, namespace, name), threading.Lock())

    def _claim_modes(self, namespace: str, claim: str) -> list[str] | None:
        try:
            pvc = self.kube.get(kube.PVC, namespace, claim)
        except ApiError as exc:
            logger.warning("cannot read PVC %s/%s: %s", namespace, claim, exc)
            return None
        return list(((pvc or {}).get("spec") or {}).get("accessModes") or []) or None

    # ========================================================================================
    # KerasTrainingJob

    def reconcile_training(self, namespace: str, name: str) -> TrainingResult:
        """Make the job's children match its spec, then refresh its status."""
        result = TrainingResult()
        body = self.kube.get(kube.TRAINING_JOB, namespace, name)
        if body is None or _deleting(body):
            return result
        try:
            parsed = training.parse(body)
            modes = None
            storage = parsed.spec.output.volume
            if storage is not None and storage.claim_name:
                modes = self._claim_modes(namespace, storage.claim_name)
            children = training.desired_children(
                body,
                default_image=self.config.runtime_image,
                image_pull_policy=self.config.image_pull_policy,
                claim_access_modes=modes,
            )
        except SpecError as exc:
            result.spec_error = str(exc)
            self.sync_training_status(namespace, name, spec_error=result.spec_error)
            return result

        if not _terminal(body):
            try:
                if children.service_account is not None:
                    apply.ensure_shared(self.kube, children.service_account, body)
                if children.pvc is not None:
                    # Never owner-checked: a retained claim of an earlier job with the same
                    # name is reused, never taken over or deleted.
                    apply.ensure_created(self.kube, children.pvc, check_owner=False)
                if children.workers_service is not None:
                    apply.ensure_applied(self.kube, children.workers_service)
                fields = training.job_patched_fields(parsed, kueue=self.config.kueue)
                self._ensure_trainer_job(body, children.job, result, fields)
            except (ApiError, apply.ChildConflict) as exc:
                failure = _apply_failure(exc)
                if failure is None:
                    raise
                self.sync_training_status(namespace, name, apply_error=failure.message)
                self.post_event(body, "Warning", failure.reason, failure.message)
                raise failure from exc
        self.sync_training_status(namespace, name)
        return result

    def _ensure_trainer_job(
        self,
        body: dict[str, Any],
        desired: dict[str, Any],
        result: TrainingResult,
        fields: tuple[str, ...],
    ) -> None:
        meta = desired["metadata"]
        live = self.kube.get(kube.JOB, meta["namespace"], meta["name"])
        if live is None:
            apply.ensure_created(self.kube, desired)
            return
        if training.template_drift(live, desired):
            if training.job_is_idle_suspended(live) and desired["spec"].get("suspend"):
                # Suspended with no pods: replace it so resources/scheduling/image changes
                # apply on resume (the trainer resumes from its checkpoints: same job id).
                apply.check_owner(live, desired)
                self.kube.delete(kube.JOB, meta["namespace"], meta["name"])
                metrics.CHILD_WRITES.labels(kind="Job", action="deleted").inc()
                apply.ensure_created(self.kube, desired)
                result.recreated = True
                self.post_event(
                    body,
                    "Normal",
                    "JobRecreated",
                    "suspended trainer Job recreated with the new resources/scheduling/image",
                )
                return
            result.template_drift = True
        apply.ensure_patched_fields(self.kube, live, desired, fields)

    def _observe_queue(
        self, job: dict[str, Any], queue: str, suspend: bool
    ) -> training.ObservedQueue:
        """The queued trainer Job's Kueue Workload; a pause by hand is passed on to it."""
        if not self.config.kueue:
            return training.ObservedQueue(queue, support=False)
        meta = job["metadata"]
        try:
            found = self.kube.list(
                kube.WORKLOAD,
                meta["namespace"],
                label_selector=f"{training.JOB_UID_LABEL}={meta['uid']}",
            )
        except ApiError as exc:
            if exc.not_found:  # Kueue's CRDs are not installed
                return training.ObservedQueue(queue, support=True, served=False)
            raise
        workload = next((w for w in found if controller_uid(w) == meta["uid"]), None)
        if workload is not None:
            patch = training.workload_active_patch(workload, suspend)
            if patch is not None:
                workload = self.kube.merge_patch(
                    kube.WORKLOAD, meta["namespace"], workload["metadata"]["name"], patch
                )
        return training.ObservedQueue(queue, support=True, workload=workload)

    def sync_training_status(
        self,
        namespace: str,
        name: str,
        *,
        read_logs: bool = False,
        spec_error: str | None = None,
        apply_error: str | None = None,
    ) -> dict[str, Any] | None:
        """Recompute the job's status from its children and write it if it changed."""
        with self._lock("KerasTrainingJob", namespace, name):
            body = self.kube.get(kube.TRAINING_JOB, namespace, name)
            if body is None or _deleting(body):
                return None
            parsed = None
            if spec_error is None:
                try:
                    parsed = training.parse(body)
                except SpecError as exc:
                    spec_error = str(exc)
            job = (
                None
                if spec_error
                else self.kube.get(kube.JOB, namespace, training.trainer_job_name(name))
            )
            if job is None and apply_error is None and not spec_error:
                apply_error = _standing_apply_error(body)
            pods: list[dict[str, Any]] = []
            if job is not None:
                pods = self.kube.list(
                    kube.POD, namespace, label_selector=f"{LABEL_TRAINING_JOB}={label_value(name)}"
                )
            queue = None
            if job is not None and parsed is not None and parsed.queue_name:
                queue = self._observe_queue(job, parsed.queue_name, parsed.spec.suspend)
            observed = training.ObservedTraining(
                job=job, pods=pods, spec_error=spec_error, apply_error=apply_error, queue=queue
            )
            now = now_rfc3339()
            new = training.training_status(body, observed, now=now)
            old = body.get("status") or {}
            finished_now = (
                new.get("phase") in training.TERMINAL_PHASES
                and old.get("phase") not in training.TERMINAL_PHASES
            )
            if job is not None and ((read_logs and new.get("phase") == "Running") or finished_now):
                w0 = training.worker0_pod(training.job_pods(job, pods))
                if w0 is not None:
                    text = self.kube.pod_log(
                        namespace, w0["metadata"]["name"], container=training.CONTAINER
                    )
                    if text:
                        observed.log_lines = text.splitlines()
                        new = training.training_status(body, observed, now=now)
            self._write_status(kube.TRAINING_JOB, body, new)
            posted = training.phase_events(old, new)
            if posted:
                metrics.PHASE_TRANSITIONS.labels(kind="KerasTrainingJob", phase=new["phase"]).inc()
            for event in posted:
                self.post_event(body, *event)
            trial = training.trial_event(old, new)
            if trial is not None:
                self.post_event(body, *trial)
            queue_event = training.queue_event(old, new)
            if queue_event is not None:
                self.post_event(body, *queue_event)
            return new

    def _write_status(self, kind: kube.Kind, body: dict[str, Any], new: dict[str, Any]) -> bool:
        patch = status_patch(body.get("status"), new)
        if not patch:
            return False
        meta = body["metadata"]
        try:
            self.kube.merge_patch(
                kind, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
            )
        except ApiError as exc:
            if exc.not_found:  # deleted meanwhile
                return False
            raise
        metrics.STATUS_WRITES.labels(kind=kind.kind).inc()
        return True

    # ========================================================================================
    # KerasModelService

    def services_following(self, namespace: str, job_name: str) -> list[str]:
        return [
            s["metadata"]["name"]
            for s in self.kube.list(kube.MODEL_SERVICE, namespace)
            if ((s.get("spec") or {}).get("model") or {}).get("trainingJob") == job_name
        ]

    def training_job_seen(self, body: dict[str, Any], *, deleted: bool = False) -> list[str]:
        """Re-reconcile the services following a job when its model changes (or it goes).

        Returns the names of the services reconciled.
        """
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        st = body.get("status") or {}
        fingerprint = (
            None
            if deleted
            else (st.get("modelVersion"), st.get("modelName"), st.get("modelClaimName"))
        )
        if key in self._seen_models and self._seen_models[key] == fingerprint:
            return []
        first_sight = key not in self._seen_models
        self._seen_models[key] = fingerprint
        if first_sight and fingerprint == (None, None, None):
            # No model yet: its followers wait for one, as their own reconciles found. Listing
            # the namespace's services for each such job made a start-up with N jobs and M
            # services cost N lists of M objects.
            return []
        if deleted:
            self._seen_models.pop(key, None)
        names = self.services_following(*key)
        for svc in names:
            self.reconcile_service(key[0], svc)
        return names

    def _resolve(
        self, body: dict[str, Any]
    ) -> tuple[serving.ModelRef | serving.Waiting, list[str] | None]:
        svc = serving.parse(body)
        namespace = body["metadata"]["namespace"]
        job_body = None
        if svc.spec.model.training_job:
            job_body = self.kube.get(kube.TRAINING_JOB, namespace, svc.spec.model.training_job)
        model = serving.resolve_model(body, job_body)
        modes = None
        if isinstance(model, serving.ModelRef) and model.claim_name is not None:
            modes = self._claim_modes(namespace, model.claim_name)
            if modes is None and job_body is not None:
                try:
                    storage = training.parse(job_body).spec.output.volume
                    if storage is not None and storage.size:
                        modes = [storage.access_mode]
                except SpecError:
                    pass
        return model, modes

    def reconcile_service(self, namespace: str, name: str) -> None:
        """Make the service's Deployment/Service/HPA/PDB match its spec and model."""
        body = self.kube.get(kube.MODEL_SERVICE, namespace, name)
        if body is None or _deleting(body):
            return
        try:
            model, modes = self._resolve(body)
            plan = None
            if isinstance(model, serving.ModelRef) and serving.parse(body).spec.rollout:
                plan = rollout.routing(self.rollout_step(namespace, name))
            children = serving.desired_children(
                body,
                model,
                default_image=self.config.runtime_image,
                serving_image=self.config.serving_image,
                image_pull_policy=self.config.image_pull_policy,
                claim_access_modes=modes,
                rollout_plan=plan,
            )
        except SpecError as exc:
            self.sync_service_status(namespace, name, model=exc)
            return
        uid = body["metadata"]["uid"]
        try:
            if children.service_account is not None:
                apply.ensure_shared(self.kube, children.service_account, body)
            apply.ensure_applied(self.kube, children.service)
            if children.rollout_config is not None:
                apply.ensure_applied(self.kube, children.rollout_config)
                self._deliver_plan(namespace, name, children.rollout_config)
            elif children.deployment is not None:  # spec.rollout removed
                apply.ensure_absent(
                    self.kube, kube.CONFIG_MAP, namespace, serving.rollout_config_name(name), uid
                )
            if children.deployment is not None:
                apply.ensure_applied(self.kube, children.deployment)
                if children.hpa is not None:
                    apply.ensure_applied(self.kube, children.hpa)
                else:
                    apply.ensure_absent(self.kube, kube.HPA, namespace, name, uid)
                if children.pdb is not None:
                    apply.ensure_applied(self.kube, children.pdb)
                else:
                    apply.ensure_absent(self.kube, kube.PDB, namespace, name, uid)
        except (ApiError, apply.ChildConflict) as exc:
            failure = _apply_failure(exc)
            if failure is None:
                raise
            self.sync_service_status(namespace, name, model=model, apply_error=failure.message)
            self.post_event(body, "Warning", failure.reason, failure.message)
            raise failure from exc
        # While waiting for a model an existing Deployment is left as it is: the server
        # keeps serving the last version (e.g. after the training job was deleted).
        self.sync_service_status(namespace, name, model=model)

    def rollout_step(self, namespace: str, name: str) -> rollout.RolloutState:
        """One step of the gate/shadow/canary state machine; its state is saved in status first.

        Under the service's lock, from a fresh read: a restarted operator resumes from status,
        and two triggers at once cannot promote twice.
        """
        with self._lock("KerasModelService", namespace, name):
            body = self.kube.get(kube.MODEL_SERVICE, namespace, name)
            if body is None:
                return rollout.RolloutState()
            svc = serving.parse(body)
            old = body.get("status") or {}
            state = rollout.RolloutState.from_status(old.get("rollout"))
            history = list(old.get("history") or [])
            job = None
            if svc.spec.model.training_job:
                job = self.kube.get(kube.TRAINING_JOB, namespace, svc.spec.model.training_job)
            latest = svc.spec.model.version or ((job or {}).get("status") or {}).get("modelVersion")
            counters = (
                parse_server_metrics(self._server_metrics(namespace, name))
                if state.candidate
                else {}
            )
            decision = rollout.step(
                svc.spec.rollout,
                state,
                history,
                latest=latest,
                metadata=rollout.known_metadata(
                    history, latest, rollout.job_metadata(job) if job else {}
                ),
                counters=counters,
                now=clock(),
                now_text=now_rfc3339(),
                pinned=svc.spec.model.version,
                manual=rollout.Manual.of(svc.spec.rollout, body["metadata"].get("annotations")),
            )
            rollout_status = decision.state.to_status()
            if rollout_status != old.get("rollout"):
                rollout_status = rollout.replacing(old.get("rollout"), rollout_status)
            new = {**old, "rollout": rollout_status, "history": decision.history}
            self._write_status(kube.MODEL_SERVICE, body, new)
            for event in decision.events:
                self.post_event(body, *event)
            return decision.state

    def _deliver_plan(self, namespace: str, name: str, rollout_config: dict[str, Any]) -> None:
        """Annotate the server pods that have not seen this plan (see ``plan_nudges``)."""
        pods = self.kube.list(kube.POD, namespace, label_selector=serving.selector_string(name))
        for pod_name, patch in serving.plan_nudges(rollout_config, pods).items():
            try:
                self.kube.merge_patch(kube.POD, namespace, pod_name, patch)
            except (
                ApiError
            ) as exc:  # gone, or no `patch pods` right: the kubelet's resync still delivers it
                logger.info("rollout plan nudge of pod %s/%s: %s", namespace, pod_name, exc)

    def _server_metrics(self, namespace: str, name: str) -> list[str]:
        """The ``/metrics`` text of each running server pod of the service that answers."""
        texts = []
        for pod in self.kube.list(
            kube.POD, namespace, label_selector=serving.selector_string(name)
        ):
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or (pod.get("status") or {}).get("phase") != "Running":
                continue
            try:
                with urllib.request.urlopen(
                    f"http://{ip}:{serving.PORT}/metrics", timeout=3
                ) as response:
                    texts.append(response.read().decode())
            except OSError as exc:  # a pod going away: the others still count
                logger.info("metrics of server pod %s: %s", pod["metadata"]["name"], exc)
        return texts

    def sync_service_status(
        self,
        namespace: str,
        name: str,
        *,
        model: serving.ModelRef | serving.Waiting | SpecError | None = None,
        apply_error: str | None = None,
    ) -> dict[str, Any] | None:
        with self._lock("KerasModelService", namespace, name):
            body = self.kube.get(kube.MODEL_SERVICE, namespace, name)
            if body is None or _deleting(body):
                return None
            if model is None:
                try:
                    model, _ = self._resolve(body)
                except SpecError as exc:
                    model = exc
            dep = self.kube.get(kube.DEPLOYMENT, namespace, serving.deployment_name(name))
            if dep is not None and controller_uid(dep) != body["metadata"].get("uid"):
                dep = None  # a foreign Deployment with our name: not ours to report
            store_errors = None
            if isinstance(model, serving.ModelRef) and model.uri is not None and dep is not None:
                store_errors = [store_error(t) for t in self._server_metrics(namespace, name)]
            old = body.get("status") or {}
            new = serving.service_status(
                body,
                model,
                dep,
                now=now_rfc3339(),
                cluster_domain=self.config.cluster_domain,
                apply_error=apply_error,
                store_errors=store_errors,
            )
            self._write_status(kube.MODEL_SERVICE, body, new)
            event = serving.phase_event(old, new)
            if event is not None:
                metrics.PHASE_TRANSITIONS.labels(
                    kind="KerasModelService", phase=new.get("phase", "")
                ).inc()
                self.post_event(body, *event)
            return new
