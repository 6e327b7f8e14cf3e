"""Which worker this process is, the Keras backend it trains on, and joining the others.

Multi-worker data parallel training (``KERASOP_NUM_WORKERS`` > 1) uses Keras'
``DataParallel`` on the JAX backend: worker 0 coordinates, and reading or saving the
variables is a collective operation every worker joins.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasop import contracts
from kerasop.events import EXIT_BAD_SPEC, EXIT_INTERNAL
from kerasop.spec import KerasTrainingJob, TrainingSpec
from kerasop.store import KERAS_FILE
from kerasop_trainer.errors import TrainerError, note


@dataclass(frozen=True)
class WorkerConfig:
    """Which worker this process is (``KERASOP_NUM_WORKERS`` and friends)."""

    count: int = 1
    index: int = 0
    coordinator: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerConfig:
        env = os.environ if environ is None else environ
        try:
            count = int(env.get(contracts.ENV_NUM_WORKERS) or 1)
            raw_index = env.get(contracts.ENV_WORKER_INDEX) or env.get("JOB_COMPLETION_INDEX") or 0
            index = int(raw_index)
        except ValueError as exc:
            raise TrainerError(f"bad worker environment: {exc}", EXIT_BAD_SPEC) from None
        if count < 1 or not 0 <= index < count:
            raise TrainerError(
                f"worker index {index} is outside 0..{count - 1} ({contracts.ENV_NUM_WORKERS}={count})",
                EXIT_BAD_SPEC,
            )
        coordinator = env.get(contracts.ENV_COORDINATOR) or None
        if count > 1 and not coordinator:
            raise TrainerError(
                f"{contracts.ENV_COORDINATOR} (host:port of worker 0) is required with several workers",
                EXIT_BAD_SPEC,
            )
        return cls(count=count, index=index, coordinator=coordinator)


def resolve_backend(job: KerasTrainingJob, workers: WorkerConfig) -> str:
    backend = job.spec.training.backend
    if workers.count > 1 and backend != "jax":
        note(f"{workers.count} workers: data parallel training uses the jax backend, not {backend}")
        backend = "jax"
    return backend


def prepare_environment(
    job: KerasTrainingJob, store_root: str | os.PathLike[str], backend: str
) -> None:
    """Set ``KERAS_BACKEND`` (and ``KERAS_HOME`` for ImageNet downloads).

    Has an effect only before Keras is first imported in this process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        return
    os.environ["KERAS_BACKEND"] = backend
    transfer = job.spec.model.transfer if job.spec.model is not None else None
    if transfer is not None and transfer.weights == "imagenet" and "KERAS_HOME" not in os.environ:
        cache = Path(store_root) / ".cache" / "keras"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            os.environ["KERAS_HOME"] = str(cache)
        except OSError as exc:
            note(f"cannot create the weights cache {cache} ({exc}); using Keras' default")


def _import_keras(backend: str, workers: WorkerConfig) -> tuple[Any, str]:
    if backend == "jax" and importlib.util.find_spec(backend) is None:
        raise TrainerError(
            f"training.backend {backend} is not installed in this trainer image",
            EXIT_BAD_SPEC,
            reason="BackendUnavailable",
        )
    if backend != "jax":
        import_tensorflow_without_jax()
    import keras

    actual = keras.backend.backend()
    if actual != backend:
        if workers.count > 1:
            raise TrainerError(
                f"multi-worker training needs the jax backend, but Keras was already imported "
                f"with {actual} in this process",
                EXIT_INTERNAL,
            )
        note(
            f"Keras was already imported with the {actual} backend; training with it, not {backend}"
        )
    if actual != "tensorflow":
        # TensorFlow only feeds data (tf.data): keep it off the accelerators.
        try:
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
        except Exception as exc:
            note(f"could not hide GPUs from TensorFlow: {exc}")
    return keras, actual


def import_tensorflow_without_jax() -> None:
    """Import TensorFlow with JAX hidden from it, when JAX is not loaded yet.

    TensorFlow imports JAX when it is installed (``tensorflow/lite/python/util.py``, for
    TFLite's JAX converter, which the trainer never uses), and with it a second XLA runtime:
    about 100 MB of RSS and part of the start-up, for nothing when Keras runs on TensorFlow.
    JAX is hidden only during this import: code that imports it later still gets it.
    """
    if "tensorflow" in sys.modules or "jax" in sys.modules:
        return
    sys.modules["jax"] = None  # type: ignore[assignment]  # "import jax" -> ImportError
    try:
        import tensorflow  # noqa: F401
    finally:
        del sys.modules["jax"]


def _gpu_count(backend: str) -> int:
    """GPUs this process's backend sees (0 with a CPU build, or a CUDA build on a CPU node)."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return len(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return sum(d.platform == "gpu" for d in jax.devices())
    except Exception:
        return 0
    return 0


def init_distribution(keras: Any, workers: WorkerConfig) -> None:
    import jax

    # jax leaves Config.update unannotated.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # type: ignore[no-untyped-call]
    try:
        keras.distribution.initialize(
            job_addresses=workers.coordinator,
            num_processes=workers.count,
            process_id=workers.index,
        )
    except Exception as exc:
        raise TrainerError(
            f"worker {workers.index}/{workers.count} could not join the coordinator "
            f"{workers.coordinator}: {exc}",
            EXIT_INTERNAL,
        ) from None
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )


def allgather_ints(values: list[int]) -> list[list[int]]:
    """Every worker's ``values`` (multi-worker JAX only)."""
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, dtype=np.int32))
    return np.asarray(gathered).reshape(-1, len(values)).tolist()


def barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def join_collective_save(model: Any) -> None:
    """What a non-chief worker does while the chief saves: the same ``model.save``."""
    with tempfile.TemporaryDirectory(prefix="kerasop-worker-") as tmp:
        model.save(Path(tmp) / KERAS_FILE)


def start_keras(
    backend: str, training: TrainingSpec, workers: WorkerConfig, seed: int | None
) -> tuple[Any, str, bool]:
    """Import Keras, join the other workers, seed, set the precision policy.

    Returns ``(keras, backend actually used, mixed precision on)``.
    """
    keras, backend = _import_keras(backend, workers)
    keras.backend.clear_session()
    if workers.count > 1:
        init_distribution(keras, workers)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    gpus = _gpu_count(backend)
    # One line either way, so a log shows at once whether the GPU image found its GPU.
    note(
        f"training on {gpus} GPU(s) ({backend})" if gpus else "no GPU visible: training on the CPU"
    )
    mixed = bool(training.mixed_precision and gpus)
    if training.mixed_precision and not gpus:
        note("mixedPrecision is set but no GPU is visible: training in float32")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return keras, backend, mixed
