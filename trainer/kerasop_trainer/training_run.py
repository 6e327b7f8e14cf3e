"""One job's training on this worker, as the built-in trainer (:mod:`.train`) and the
script API (:mod:`.api`) both run it: the job, its volumes, this worker's place, its
checkpoints, and where its events go."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from kerasop.events import EXIT_BAD_SPEC
from kerasop.objstore import ObjectModelStore
from kerasop.spec import KerasTrainingJob, TrainingSpec
from kerasop.store import ModelStore
from kerasop_trainer.checkpoints import Checkpoints
from kerasop_trainer.distributed import WorkerConfig
from kerasop_trainer.errors import TrainerError


def print_event(line: str) -> None:
    # One write per line: a search's chief prints from two threads (trials, the oracle).
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check_job_id(job_id: str) -> None:
    """The job id names a checkpoint folder: one plain path component."""
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise TrainerError(f"bad job id {job_id!r}", EXIT_BAD_SPEC)


@dataclass(frozen=True)
class TrainingRun:
    job: KerasTrainingJob
    job_id: str  # the same across restarts: it finds the checkpoints to resume from
    data_root: Path
    store_root: Path  # absolute: event paths are relative to it; scratch when output.uri is set
    workers: WorkerConfig
    emit: Callable[[str], None] = print_event  # every event line
    # A trial of a search (kerasop_trainer.tuning): the search, the trial and its values,
    # recorded in the published version's lineage.
    search: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_job_id(self.job_id)

    @property
    def training(self) -> TrainingSpec:
        return self.job.spec.training

    @property
    def model_name(self) -> str:
        return self.job.model_name

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.store_root)

    @cached_property
    def bucket(self) -> ObjectModelStore | None:
        """The model store in a bucket (``spec.output.uri``); None: the volume at store_root."""
        output = self.job.spec.output
        if output.uri is None:
            return None
        return ObjectModelStore.open(output.uri, output.store)

    @cached_property
    def checkpoints(self) -> Checkpoints:
        """This job's checkpoints; only worker 0 writes them."""
        bucket = self.bucket
        remote = None
        if bucket is not None:
            remote = (bucket.store, bucket.checkpoint_uri(self.model_name, self.job_id))
        return Checkpoints(
            self.store.checkpoint_dir(self.model_name, self.job_id),
            chief=self.workers.is_chief,
            interval_s=self.training.checkpoint_interval_seconds,
            workers=self.workers.count,
            remote=remote,
        )
