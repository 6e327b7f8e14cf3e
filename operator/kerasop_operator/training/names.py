"""Names, labels and constants of a KerasTrainingJob's children."""

from __future__ import annotations

from typing import Any

from kerasop.spec import KerasTrainingJob

from ..common import (
    LABEL_TRAINING_JOB,
    child_name,
    common_labels,
    label_value,
    parse_resource,
)

KIND = "KerasTrainingJob"
PLURAL = "kerastrainingjobs"
CONTAINER = "trainer"
COMPONENT = "trainer"
COORDINATOR_PORT = 12345
DEFAULT_SERVICE_ACCOUNT = "kerasop-trainer"
LOG_TAIL_LINES = 20  # lines of the trainer's log kept in status.failure.logTail

# Job-level lifecycle fields: the only ones that may change after creation (everything
# in the pod template is immutable once the Job exists, unless the Job is suspended; see
# reconcile), and the ones the trainer does not read.
JOB_MUTABLE_FIELDS = ("suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "backoffLimit")

TERMINAL_PHASES = ("Succeeded", "Failed")


# --------------------------------------------------------------------------------------------
# names


def trainer_job_name(job_name: str) -> str:
    # Indexed pods are called <job>-trainer-<index>; keep room for the index.
    return child_name(job_name, "-trainer", 63 - 3)


def workers_service_name(job_name: str) -> str:
    return child_name(job_name, "-workers")


def models_claim_name(job_name: str) -> str:
    return child_name(job_name, "-models", 253)


def parse(body: dict[str, Any]) -> KerasTrainingJob:
    """The typed job; raises ``SpecError`` when the spec does not validate."""
    return parse_resource(KerasTrainingJob, KIND, body)


def claim_name_of(job: KerasTrainingJob) -> str | None:
    """The PVC holding the job's model store (existing claim, or the one the operator makes);
    None for a model store in a bucket (``output.uri``)."""
    storage = job.spec.output.volume
    if storage is None:
        return None
    return storage.claim_name or models_claim_name(job.metadata.name)


def job_labels(job_name: str) -> dict[str, str]:
    return {**common_labels(COMPONENT), LABEL_TRAINING_JOB: label_value(job_name)}
