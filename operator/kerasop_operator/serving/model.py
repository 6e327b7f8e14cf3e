"""Which model a KerasModelService serves: a named claim, or what its training job wrote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kerasop.spec import ObjectStoreSpec, SpecError

from ..training import claim_name_of
from ..training import parse as parse_training_job
from .names import parse


@dataclass(frozen=True)
class UserCodeRef:
    """The training job's ``model.codePath`` folder on its data claim: the server pods
    mount it read-only so the Keras engine can import the user's registered classes."""

    claim_name: str
    path: str


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what the server pods will load."""

    name: str
    claim_name: str | None  # None: the store is in a bucket (uri)
    version: int | None  # None = the latest, picked up by the server itself
    source: str  # human-readable origin, for messages
    # Versions known (from the trainer's report) to hold model.onnx: the slim image serves them.
    onnx_versions: frozenset[int] = frozenset()
    code: UserCodeRef | None = None
    uri: str | None = None  # a model store in a bucket, mirrored by each server pod
    store: ObjectStoreSpec | None = None

    @property
    def where(self) -> str:
        """The store, for messages."""
        return f"claim {self.claim_name}" if self.claim_name is not None else str(self.uri)


@dataclass(frozen=True)
class Waiting:
    """No model to serve yet."""

    reason: str
    message: str


def resolve_model(
    body: dict[str, Any],
    training_job: dict[str, Any] | None,
) -> ModelRef | Waiting:
    """Which model name/claim/version the service serves.

    ``training_job``: the KerasTrainingJob named in ``spec.model.trainingJob``
    (``None`` if it does not exist); ignored for a name + claimName model.
    """
    svc = parse(body)
    model = svc.spec.model
    if model.training_job is None:
        assert model.name is not None
        where = f"claim {model.claim_name}" if model.claim_name is not None else str(model.uri)
        return ModelRef(
            model.name, model.claim_name, model.version, where, uri=model.uri, store=model.store
        )
    if training_job is None:
        return Waiting(
            "TrainingJobNotFound",
            f"KerasTrainingJob {model.training_job} does not exist (yet)",
        )
    try:
        job = parse_training_job(training_job)
    except SpecError as exc:
        return Waiting("TrainingJobInvalid", f"KerasTrainingJob {model.training_job}: {exc}")
    jstatus = training_job.get("status") or {}
    name = jstatus.get("modelName") or job.model_name
    output = job.spec.output
    claim = None if output.uri is not None else jstatus.get("modelClaimName") or claim_name_of(job)
    version = model.version or jstatus.get("modelVersion")
    if not version:
        phase = jstatus.get("phase") or "Pending"
        detail = f", {jstatus['progress']} epochs" if jstatus.get("progress") else ""
        return Waiting(
            "WaitingForModel",
            f"KerasTrainingJob {model.training_job} has no model version yet (phase {phase}{detail})",
        )
    code = None
    if job.spec.model is not None and job.spec.model.code_path and job.spec.data.volume:
        code = UserCodeRef(job.spec.data.volume.claim_name, job.spec.model.code_path)
    history = (body.get("status") or {}).get("history") or []
    return ModelRef(
        name,
        claim,
        int(version),
        f"KerasTrainingJob {model.training_job}",
        onnx_versions(history, jstatus),
        code,
        output.uri,
        output.store,
    )


def onnx_versions(
    history: Iterable[Mapping[str, Any]], job_status: Mapping[str, Any]
) -> frozenset[int]:
    """Versions the trainer reported with ``onnx`` among their formats.

    The job's status describes its latest version; the service's rollout history keeps
    what it saw of older ones.
    """
    known = {int(e["version"]) for e in history if "onnx" in (e.get("modelFormats") or [])}
    latest = job_status.get("modelVersion")
    if latest and "onnx" in (job_status.get("modelFormats") or []):
        known.add(int(latest))
    return frozenset(known)
