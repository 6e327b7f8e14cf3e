"""Hyperparameter search (``spec.tuning``) on keras-tuner.

The search space maps to keras-tuner ``HyperParameters`` (one per spec path) and keras-tuner's
own oracle picks the trials (``RandomSearchOracle``, ``BayesianOptimizationOracle``,
``HyperbandOracle``); a ``BaseTuner`` runs them. A trial is the job's spec with the trial's
values at their paths (:meth:`kerasop.spec.KerasTrainingJobSpec.trial_spec`), trained by the
built-in training run (:func:`.train.train`) under its own job id, so its checkpoints are its
own and a killed trial resumes from them. A trial that fails (a value the model cannot take,
a NaN loss) is recorded as failed with its reason and the search goes on.

The oracle keeps its state in ``<store>/<model>/.tuning/<job-id>/`` on the model volume, so
a restarted search reloads it and goes on where it was. On a cluster the search runs in
keras-tuner's distributed mode (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
``KERASTUNER_ORACLE_PORT``): the ``chief`` serves the oracle and runs trials itself as
``tuner0``, the other workers (``tuner1``, ``tuner2``, ...) run trials; a worker restarted
with its tuner id gets its ongoing trial back.

When the search ends, the chief (or the one local process) publishes the best trial as the
job's next version: its finished checkpoint is published, with the search and the trial in
the version's lineage.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasop import events
from kerasop.contracts import (
    ENV_KERASTUNER_ORACLE_IP,
    ENV_KERASTUNER_ORACLE_PORT,
    ENV_KERASTUNER_TUNER_ID,
    ENV_TUNER_INDEX,
)
from kerasop.events import BEST_TRIALS, EXIT_BAD_SPEC, EXIT_INTERNAL
from kerasop.spec import KerasTrainingJob, TuningSpec
from kerasop.store import ModelStore, write_json_atomic
from kerasop_trainer import train
from kerasop_trainer.distributed import WorkerConfig
from kerasop_trainer.errors import TrainerError, note
from kerasop_trainer.training_run import TrainingRun, check_job_id, print_event

CHIEF = "chief"  # keras-tuner's tuner id of the oracle's process
LOCAL_TUNER = "tuner0"  # the chief's own trials run under this tuner id
LOCALHOST = "127.0.0.1"
HYPERBAND_EPOCHS = "tuner/epochs"  # Hyperband's per-trial epoch budget


def project_dir(store: ModelStore, model_name: str, job_id: str) -> Path:
    """Where the oracle keeps its state: beside the model's checkpoints, on the model volume."""
    return store.model_dir(model_name) / ".tuning" / job_id


def trial_job_id(job_id: str, trial_id: str) -> str:
    """The job id a trial trains under: it names the trial's checkpoints."""
    return f"{job_id}-trial-{trial_id}"


def hyperparameters(tuning: TuningSpec) -> Any:
    """The search space as keras-tuner ``HyperParameters``, one per spec path."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for path, dim in tuning.space.items():
        if dim.choice is not None:
            hp.Choice(path, dim.choice, ordered=False)
        elif dim.uniform is not None:
            hp.Float(path, dim.uniform[0], dim.uniform[1])
        elif dim.log_uniform is not None:
            hp.Float(path, dim.log_uniform[0], dim.log_uniform[1], sampling="log")
        elif dim.int_range is not None:
            low, high, *step = dim.int_range
            hp.Int(path, low, high, step=step[0] if step else 1)
    return hp


def oracle(job: KerasTrainingJob, on_trial_end: Callable[[Any, Any], None] | None = None) -> Any:
    """keras-tuner's oracle for ``spec.tuning`` (its algorithm, objective, trials and seed).

    ``on_trial_end(trial, oracle)``: called in the process that holds the oracle (the chief
    of a distributed search) each time it records a trial's end."""
    import keras_tuner as kt

    spec = job.spec
    tuning = spec.tuning
    assert tuning is not None
    objective = kt.Objective(
        tuning.objective_metric(spec.training), tuning.objective_direction(spec.training)
    )
    common: dict[str, Any] = {
        "objective": objective,
        "hyperparameters": hyperparameters(tuning),
        "seed": tuning.seed,
        "allow_new_entries": False,
        "tune_new_entries": False,
        # A failed trial is recorded and the search goes on, however many fail.
        "max_consecutive_failed_trials": tuning.max_trials + 1,
    }
    if tuning.algorithm == "hyperband":
        common["max_epochs"] = spec.training.epochs
    else:
        common["max_trials"] = tuning.max_trials
    base = {
        "random": kt.oracles.RandomSearchOracle,
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }[tuning.algorithm]
    made = (_reporting(base, on_trial_end) if on_trial_end else base)(**common)
    made.max_trials = tuning.max_trials  # hyperband takes none: the base oracle stops there
    return made


def _reporting(base: type, on_trial_end: Callable[[Any, Any], None]) -> type:
    class Reporting(base):  # type: ignore[misc]
        def end_trial(self, trial: Any) -> None:
            super().end_trial(trial)
            if trial.trial_id in self.end_order:  # ended for good (not sent for a retry)
                on_trial_end(trial, self)

    return Reporting


def trial_job(job: KerasTrainingJob, values: dict[str, Any]) -> KerasTrainingJob:
    """The job a trial trains: the spec with the trial's values (Hyperband: its epochs)."""
    spec = job.spec.trial_spec({k: v for k, v in values.items() if "/" not in k})
    if HYPERBAND_EPOCHS in values:
        training = spec.training.model_copy(update={"epochs": int(values[HYPERBAND_EPOCHS])})
        spec = spec.model_copy(update={"training": training})
    return job.model_copy(update={"spec": spec})


def space_values(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's values without keras-tuner's own bookkeeping (``tuner/...``)."""
    return {k: v for k, v in values.items() if "/" not in k}


class Search:
    """One search: the job, where it runs, and where its events go."""

    def __init__(
        self,
        job: KerasTrainingJob,
        data_root: Path,
        store_root: Path,
        job_id: str,
        emit: Callable[[str], None] = print_event,
    ) -> None:
        check_job_id(job_id)
        if job.spec.tuning is None:
            raise TrainerError("the job has no spec.tuning", EXIT_BAD_SPEC)
        self.job = job
        self.tuning: TuningSpec = job.spec.tuning
        self.data_root = data_root
        self.store_root = store_root.absolute()
        self.job_id = job_id
        self.emit = emit
        self.metric = self.tuning.objective_metric(job.spec.training)
        self.direction = self.tuning.objective_direction(job.spec.training)
        self.curves = Curves(project_dir(self.store, job.model_name, job_id) / "curves")
        self.stopped: dict[str, str] = {}  # trial id -> why it stopped early

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.store_root)

    def run_trial(self, trial_id: str, values: dict[str, Any]) -> dict[str, float]:
        """Train one trial; its final validation metrics. Raises keras-tuner's
        ``FailedTrialError`` (with the reason) when the trial cannot give an objective."""
        from keras_tuner.errors import FailedTrialError

        trial_id_ = trial_job_id(self.job_id, trial_id)
        try:
            current = self.trial_run(trial_id, values, trial_id_)
            import keras

            stopping = median_stopping(keras, self, trial_id)
            trained = train.train(current, extra_callbacks=[stopping])
        except TrainerError as exc:
            raise FailedTrialError(f"{exc.reason}: {exc.message}") from None
        except (ValueError, TypeError) as exc:  # Keras refusing a value (a bad layer size)
            raise FailedTrialError(f"{type(exc).__name__}: {exc}") from None
        value = trained.metrics.get(self.metric)
        if value is None:
            raise FailedTrialError(
                f"the trial reported no {self.metric} (it reported {sorted(trained.metrics)})"
            )
        if not math.isfinite(value):
            raise FailedTrialError(f"{self.metric} is {value} (the loss diverged)")
        self.curves.write(trial_id, stopping.curve)
        return trained.metrics

    def trial_run(self, trial_id: str, values: dict[str, Any], job_id: str) -> TrainingRun:
        def emit(line: str) -> None:  # a trial's start and epoch events name the trial
            self.emit(line[:-1] + f',"trialId":"{trial_id}"}}' if line.endswith("}") else line)

        job = trial_job(self.job, values)
        return TrainingRun(
            job,
            job_id,
            self.data_root,
            self.store_root,
            WorkerConfig(),
            emit,
            self._lineage(trial_id, values),
        )

    def _lineage(self, trial_id: str, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "job": self.job.metadata.name,
            "jobId": self.job_id,
            "trial": trial_id,
            "hyperparameters": space_values(values),
            "algorithm": self.tuning.algorithm,
        }

    def trial_event(self, ended: Any, oracle: Any) -> str:
        """The ``trial`` event of a trial that ended (as the oracle recorded it)."""
        trial = oracle.get_trial(ended.trial_id)
        completed = trial.status == "COMPLETED"
        fields: dict[str, Any] = {
            "trialId": trial.trial_id,
            "status": "completed" if completed else "failed",
            "values": space_values(trial.hyperparameters.values),
            "metric": self.metric,
            "done": len(oracle.end_order),
            "total": self.tuning.max_trials,
            "best": [_summary(t) for t in oracle.get_best_trials(BEST_TRIALS)],
        }
        if completed:
            fields["objective"] = trial.score
            if trial.trial_id in self.stopped:
                fields["message"] = self.stopped[trial.trial_id]
        else:
            fields["reason"] = "TrialFailed"
            fields["message"] = _first_line(ended.message or trial.message or "")
        return events.encode("trial", **fields)


class Curves:
    """Each finished trial's objective per epoch, one JSON file per trial beside the
    oracle's state (every trial pod sees them): what median stopping compares with."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def write(self, trial_id: str, curve: list[float]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / f"{trial_id}.json", curve)

    def others(self, trial_id: str) -> list[list[float]]:
        if not self.dir.is_dir():
            return []
        out = []
        for file in sorted(self.dir.glob("*.json")):
            if file.stem != trial_id:
                with contextlib.suppress(OSError, ValueError):
                    out.append([float(v) for v in json.loads(file.read_text())])
        return out


def worse_than_median(
    value: float, epoch: int, others: list[list[float]], direction: str, min_trials: int
) -> float | None:
    """The median of the other trials at ``epoch`` (1-based) when ``value`` is worse than
    it and at least ``min_trials`` trials got that far; else None."""
    at_epoch = sorted(curve[epoch - 1] for curve in others if len(curve) >= epoch)
    if len(at_epoch) < min_trials:
        return None
    median = statistics.median(at_epoch)
    worse = value > median if direction == "min" else value < median
    return median if worse else None


def median_stopping(keras: Any, search: Search, trial_id: str) -> Any:
    """Keras callback: records the trial's objective per epoch and, with
    ``tuning.earlyStopping``, stops the trial when it is worse than the median of the
    finished trials at the same epoch."""
    rule = search.tuning.early_stopping
    key = search.metric

    class Median(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.curve: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            value = logs.get(f"val_{key}", logs.get(key))
            if value is None:
                return
            self.curve.append(float(value))
            if rule is None or epoch + 1 < rule.after_epochs:
                return
            median = worse_than_median(
                float(value), epoch + 1, search.curves.others(trial_id), search.direction,
                rule.min_trials,
            )  # fmt: skip
            if median is not None:
                self.model.stop_training = True
                search.stopped[trial_id] = (
                    f"stopped early after epoch {epoch + 1}: {key} {float(value):.4f} is worse"
                    f" than the median {median:.4f} of the finished trials"
                )

    return Median()


def _summary(trial: Any) -> dict[str, Any]:
    return {
        "trialId": trial.trial_id,
        "values": space_values(trial.hyperparameters.values),
        "objective": trial.score,
    }


def _first_line(message: str) -> str:
    """keras-tuner keeps a traceback; the event carries its last line (the error)."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return lines[-1][:1000] if lines else ""


def _tuner(search: Search, kt_oracle: Any) -> Any:
    import keras_tuner as kt

    class Tuner(kt.engine.base_tuner.BaseTuner):  # type: ignore[misc]
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            return search.run_trial(trial.trial_id, trial.hyperparameters.values)

        def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
            """The trial's model is its checkpoint (written by the training run)."""

    directory = project_dir(search.store, search.job.model_name, search.job_id)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner prints its own progress
        return Tuner(
            oracle=kt_oracle,
            directory=str(directory.parent),
            project_name=directory.name,
            overwrite=False,  # a restarted search reloads the oracle and goes on
        )


def run(
    job: KerasTrainingJob,
    data_root: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    job_id: str,
    emit: Callable[[str], None] = print_event,
) -> dict[str, Any]:
    """Run the search (this process's part of it) and publish the best trial.

    Returns the ``done`` event of the published version; a tuner worker of a
    distributed search returns once the oracle has no trial left for it, with no version.
    """
    search = Search(job, Path(data_root), Path(store_root), job_id, emit)
    tuner_id = distributed_role(os.environ)
    reporting = oracle(job, lambda trial, o: emit(search.trial_event(trial, o)))
    if tuner_id == CHIEF:
        return _run_chief(search, reporting)
    tuner = _tuner(search, reporting)
    tuner.search(verbose=0)
    if tuner_id is not None:
        return {"kerasop": "done", "metrics": {}}
    return publish_best(search, tuner.oracle)


def _run_chief(search: Search, reporting: Any) -> dict[str, Any]:
    """The chief serves the oracle and runs trials itself as ``tuner0``: a search with
    ``parallelism`` N is N processes (pods), not N + 1, and the chief's TensorFlow is not
    imported only to wait. keras-tuner's own server runs in a thread; this process's trials go
    to it through a client like every other worker's. Then the chief publishes the best."""
    chief = _tuner(search, reporting)  # holds the oracle (KERASTUNER_TUNER_ID=chief)
    # keras-tuner's chief search serves the oracle until the search is over and every tuner
    # has left. It reads the environment when it starts serving: the port open means it has.
    server = threading.Thread(target=chief.search, kwargs={"verbose": 0}, daemon=True)
    server.start()
    port = int(os.environ[ENV_KERASTUNER_ORACLE_PORT])
    if not wait_for_port(LOCALHOST, port, alive=server.is_alive):
        raise TrainerError(
            f"keras-tuner's oracle server did not start on port {port}",
            EXIT_INTERNAL,
            reason="OracleNotServing",
        )
    os.environ[ENV_KERASTUNER_TUNER_ID] = LOCAL_TUNER  # keras-tuner reads both when a tuner
    os.environ[ENV_KERASTUNER_ORACLE_IP] = LOCALHOST  # is made: this one is a client
    _tuner(search, oracle(search.job)).search(verbose=0)
    # The server's loop looks for the end only every 20 s (keras-tuner 1.4): look here.
    kt_oracle = chief.oracle
    while server.is_alive() and (kt_oracle.ongoing_trials or kt_oracle.tuner_ids):
        time.sleep(0.1)
    return publish_best(search, kt_oracle)


def wait_for_port(host: str, port: int, alive: Callable[[], bool], every: float = 0.05) -> bool:
    """Whether ``host:port`` accepts connections before ``alive()`` turns false."""
    while alive():
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(every)
    return False


def distributed_role(environ: Any) -> str | None:
    """This pod's keras-tuner tuner id in a distributed search (None: a local search).

    The operator sets the pod's index (:data:`kerasop.contracts.ENV_TUNER_INDEX`) and the
    chief's address; keras-tuner reads its tuner id from ``KERASTUNER_TUNER_ID``, and the
    chief binds its oracle server to ``KERASTUNER_ORACLE_IP``: all addresses here.
    """
    if not environ.get(ENV_KERASTUNER_ORACLE_IP):
        return None
    index = environ.get(ENV_TUNER_INDEX)
    if index is not None:
        environ[ENV_KERASTUNER_TUNER_ID] = CHIEF if index == "0" else f"tuner{index}"
    if environ.get(ENV_KERASTUNER_TUNER_ID) == CHIEF:
        environ[ENV_KERASTUNER_ORACLE_IP] = "0.0.0.0"  # the oracle serves the other pods
    tuner_id: str | None = environ.get(ENV_KERASTUNER_TUNER_ID)
    return tuner_id


def publish_best(search: Search, kt_oracle: Any) -> dict[str, Any]:
    """Publish the best completed trial as the job's next version."""
    best = kt_oracle.get_best_trials(1)
    if not best:
        raise TrainerError(
            f"no trial of {search.tuning.max_trials} completed (see the trial events)",
            EXIT_INTERNAL,
            reason="NoTrialCompleted",
        )
    trial = best[0]
    current = search.trial_run(
        trial.trial_id, trial.hyperparameters.values, trial_job_id(search.job_id, trial.trial_id)
    )
    note(f"publishing trial {trial.trial_id} ({search.metric} {trial.score})")
    done = train.run(
        current.job,
        current.data_root,
        current.store_root,
        current.job_id,
        emit=search.emit,
        workers=current.workers,
        search=current.search,
    )  # its checkpoints go with it; the other trials' are of no more use
    for other in kt_oracle.trials:
        run = TrainingRun(
            search.job, trial_job_id(search.job_id, other), search.data_root,
            search.store_root, WorkerConfig(),
        )  # fmt: skip
        run.checkpoints.clear()
    return done
