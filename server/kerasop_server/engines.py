"""Inference engines: what actually runs a model version's forward pass.

Two engines implement the same small interface (:class:`Engine`):

``onnx`` (the default, see docs/serving.md for the numbers behind the choice)
    ONNX Runtime, on a GPU with the gpu image variant. The graph comes from
    ``model.onnx`` in the version directory when the trainer wrote one (then TensorFlow is not even
    imported), otherwise it is converted from ``model.keras`` at load time with
    ``model.export(format="onnx")`` (needs ``tf2onnx``) and checked against the
    Keras model on a random batch before it is used.
``keras``
    The ``model.keras`` file run by Keras on its backend; on TensorFlow through
    one ``tf.function`` with a batch-polymorphic input signature, so varying
    batch sizes never retrace.

``auto`` picks ONNX Runtime and falls back to Keras (with a warning in the
log) when ONNX Runtime or the converter is missing or the conversion fails.
A version whose model takes strings (a table with categorical columns, text:
``StringLookup``/``TextVectorization`` inside) has no ``model.onnx`` (ONNX
cannot hold those ops): ``auto`` goes straight to Keras. Each engine keeps
``reason``, why it was picked, for the metadata endpoints.

Every engine serves a model with one output tensor and one input tensor, or,
for string-taking models, the raw columns of raw.py split into the model's
named inputs.
"""

from __future__ import annotations

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasop.export import ExportError, convert_to_onnx
from kerasop.store import KERAS_FILE, METADATA_FILE, ONNX_FILE, read_metadata

from .raw import RawLayout

log = logging.getLogger(__name__)

ENGINES = ("auto", "keras", "onnx")

# ONNX Runtime and TensorFlow agree to ~1e-7 on float32; a converted graph that
# is further off than this is treated as a failed conversion.
VERIFY_ATOL = 1e-4
VERIFY_RTOL = 1e-3


class EngineError(RuntimeError):
    """A model version that an engine cannot load or run."""


class Engine(ABC):
    """One loaded model version, ready to run batches.

    ``input_shape`` and ``output_shape`` are per row (no batch dimension);
    ``None`` marks a dimension of any size. ``predict`` is called from one
    inference thread at a time and must be thread-safe with respect to other
    engines (it releases the GIL in both implementations).
    """

    name: str = ""
    input_name: str = "input"
    input_shape: tuple[int | None, ...] = ()
    input_dtype: np.dtype[Any] = np.dtype("float32")
    output_shape: tuple[int | None, ...] = ()
    output_dtype: np.dtype[Any] = np.dtype("float32")
    detail: str = ""  # how the engine got its graph, for metadata and logs
    reason: str = ""  # why this engine serves the version, for metadata

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch ``[n, *input_shape]``; returns ``[n, *output_shape]``."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (the object is not used afterwards)."""


def available_cpus() -> float:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` reports the node's cores; in a pod limited to 2 CPUs on
    a 64-core node a thread pool sized from it would be throttled to a crawl.
    """
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(cpus, quota) if quota else cpus


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def default_threads() -> int:
    """Intra-op threads when ``--threads 0``: the available CPUs less one.

    The event loop (HTTP, JSON, image decoding) needs a core of its own; on
    a 2-CPU machine a second inference thread made batched serving 2-3x
    slower in bench/serving_load.py (threads waking up late on a busy CPU).
    """
    return max(1, int(available_cpus()) - 1)


def load_engine(kind: str, version_dir: str | os.PathLike[str], *, threads: int = 0) -> Engine:
    """Load the model in ``version_dir`` with engine ``kind`` (auto, keras, onnx).

    ``threads``: intra-op threads of the engine; 0 picks :func:`default_threads`.
    """
    path = Path(version_dir)
    threads = threads if threads > 0 else default_threads()
    engine: Engine
    if kind == "keras":
        engine = KerasEngine(path, threads=threads)
        engine.reason = "asked for (--engine keras)"
        return engine
    if kind == "onnx":
        engine = OnnxEngine(path, threads=threads)
        engine.reason = "asked for (--engine onnx)"
        return engine
    if kind != "auto":
        raise ValueError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")
    strings = _string_inputs(path)
    if strings:
        engine = KerasEngine(path, threads=threads)
        engine.reason = (
            f"no {ONNX_FILE}: the model takes strings ({strings}), which ONNX cannot hold"
        )
        log.info("serving %s with Keras: %s", path, engine.reason)
        return engine
    try:
        engine = OnnxEngine(path, threads=threads)
        engine.reason = "the default (fastest on CPU)"
        return engine
    except Exception as exc:
        log.warning("ONNX Runtime engine not usable for %s (%s); using Keras", path, exc)
        engine = KerasEngine(path, threads=threads)
        engine.reason = f"ONNX Runtime could not serve it: {exc}"
        return engine


def _string_inputs(version_dir: Path) -> str:
    """What string inputs metadata.json describes, when there is no model.onnx ("" if none)."""
    if (version_dir / ONNX_FILE).is_file() or not (version_dir / METADATA_FILE).is_file():
        return ""
    layout = RawLayout.from_metadata(read_metadata(version_dir).input.model_dump(by_alias=True))
    if layout is None:
        return ""
    if layout.kind == "text":
        return "text, TextVectorization"
    return "categorical columns, StringLookup"


# --------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------


def _load_keras_model(version_dir: Path, threads: int = 0, *, raw: bool = False) -> Any:
    file = version_dir / KERAS_FILE
    if not file.is_file():
        raise EngineError(f"{file} is missing")
    try:
        import keras
    except ImportError as exc:  # the slim serving image: ONNX Runtime only
        raise EngineError(
            f"{version_dir} has no {ONNX_FILE} and Keras is not installed here ({exc});"
            " serve this version with the kerasop-runtime image"
        ) from exc

    if threads > 0 and keras.backend.backend() == "tensorflow":
        _set_tf_threads(threads)
    import_user_code(version_dir)
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as exc:
        raise EngineError(f"cannot load {file}: {exc}") from exc
    if (len(model.inputs) != 1 and not raw) or len(model.outputs) != 1:
        raise EngineError(
            f"{file}: the server supports models with one input and one output, this one has"
            f" {len(model.inputs)} and {len(model.outputs)}"
        )
    return model


def import_user_code(version_dir: Path) -> list[str]:
    """Import the user's modules that ``metadata.json`` ``userCode`` names; return them.

    They register the custom classes ``model.keras`` holds. Nothing is imported unless
    the version's metadata (written by the trainer from the job's ``model.builder`` /
    ``model.file.imports``) names it; the modules come from the server's Python path:
    the job's ``codePath`` mounted read-only by the operator (``PYTHONPATH``), or the
    user's own serving image.
    """
    if not (version_dir / METADATA_FILE).is_file():
        return []
    user_code = read_metadata(version_dir).user_code
    if user_code is None:
        return []
    for module in user_code.modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            where = f" (the job's codePath {user_code.code_path})" if user_code.code_path else ""
            raise EngineError(
                f"{version_dir / KERAS_FILE} needs the user's module {module}{where}, which"
                f" does not import here: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("imported the user's module %s for %s", module, version_dir)
    return list(user_code.modules)


def _shape_of(tensor: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])


class KerasEngine(Engine):
    """``model.keras`` run by Keras (``tf.function`` on the TensorFlow backend)."""

    name = "keras"

    def __init__(self, version_dir: Path, *, threads: int = 0) -> None:
        layout = None
        if (version_dir / METADATA_FILE).is_file():
            meta_in = read_metadata(version_dir).input.model_dump(by_alias=True)
            layout = RawLayout.from_metadata(meta_in)
        self.model = model = _load_keras_model(version_dir, threads, raw=layout is not None)
        import keras

        inp, out = model.inputs[0], model.outputs[0]
        if layout is None:
            self.input_name = str(getattr(inp, "name", "") or "input")
            self.input_shape = _shape_of(inp)
            self.input_dtype = np.dtype(str(getattr(inp, "dtype", "float32")))
        else:  # raw columns in, split into the model's inputs (raw.py)
            self.input_name, self.input_shape = "input", (len(layout.columns),)
            self.input_dtype = np.dtype(object)
        self.output_shape = _shape_of(out)
        self.output_dtype = np.dtype(str(getattr(out, "dtype", "float32")))
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            specs = {
                str(t.name): tf.TensorSpec((None, *_shape_of(t)), tf.as_dtype(str(t.dtype)))
                for t in model.inputs
            }
            # a table with string columns takes a dict of named inputs, other models one tensor
            table = layout is not None and layout.kind == "table"
            spec: Any = specs if table else next(iter(specs.values()))
            self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            if layout is not None:
                self._run = lambda x: self._fn(layout.to_model(x)).numpy()
            else:
                self._run = lambda x: self._fn(x).numpy()
            self.detail = f"{KERAS_FILE} via tf.function (Keras {keras.__version__})"
        elif layout is not None:
            self._run = lambda x: model.predict_on_batch(layout.to_model(x))
            self.detail = f"{KERAS_FILE} via predict_on_batch on {backend}"
        else:
            self._run = model.predict_on_batch
            self.detail = f"{KERAS_FILE} via predict_on_batch on {backend}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        run: Callable[[np.ndarray], Any] = self._run
        return np.asarray(run(batch))

    def close(self) -> None:
        self.model = None
        self._fn = self._run = None  # type: ignore[assignment]


_tf_threads_set = False


def _set_tf_threads(threads: int) -> None:
    global _tf_threads_set
    if _tf_threads_set:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already initialised: keep its setting
        log.info("TensorFlow's thread pools are already set up; keeping them")
    _tf_threads_set = True


# --------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


CUDA_PROVIDER = "CUDAExecutionProvider"


def execution_providers(available: list[str]) -> list[str]:
    """CUDA first where this ONNX Runtime has it (the gpu image variant), the CPU always."""
    return ([CUDA_PROVIDER] if CUDA_PROVIDER in available else []) + ["CPUExecutionProvider"]


def device_note(asked: list[str], used: list[str]) -> str:
    """How the engine line ends: where the graph runs, and why not on a GPU when it could."""
    if CUDA_PROVIDER in used:
        return ", on the GPU"
    if CUDA_PROVIDER in asked:
        return ", on the CPU: this ONNX Runtime has CUDA but sees no GPU"
    return ", on the CPU"


class OnnxEngine(Engine):
    """An ONNX graph run by ONNX Runtime: on a GPU when it has one, else on the CPU."""

    name = "onnx"

    def __init__(self, version_dir: Path, *, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("onnxruntime is not installed") from exc

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads > 0:
            options.intra_op_num_threads = threads
        # Idle intra-op threads would otherwise spin for a while after each
        # call, burning cores that the event loop and JSON coding need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        onnx_file = version_dir / ONNX_FILE
        reference: Any = None
        if onnx_file.is_file():
            graph: bytes = onnx_file.read_bytes()
            self.detail = f"{ONNX_FILE} from the version directory"
        else:
            reference = _load_keras_model(version_dir, threads)
            try:
                graph = convert_to_onnx(reference)
            except ExportError as exc:
                raise EngineError(f"{ONNX_FILE} is not in the version directory: {exc}") from exc
            self.detail = f"converted from {KERAS_FILE} at load time"
        providers = execution_providers(ort.get_available_providers())
        if CUDA_PROVIDER in providers and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu finds the CUDA/cuDNN of the nvidia-* wheels only when told to
            ort.preload_dlls()
        try:
            self.session = ort.InferenceSession(graph, sess_options=options, providers=providers)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime cannot load the graph: {exc}") from exc
        self.detail += device_note(providers, self.session.get_providers())
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(
                f"the ONNX graph has {len(inputs)} inputs and {len(outputs)} outputs;"
                " the server supports one of each"
            )
        self._in, self._out = inputs[0].name, outputs[0].name
        self.input_name = self._in
        self.input_shape = _ort_shape(inputs[0].shape)
        self.input_dtype = _ort_dtype(inputs[0].type)
        self.output_shape = _ort_shape(outputs[0].shape)
        self.output_dtype = _ort_dtype(outputs[0].type)
        if reference is not None:
            self._verify(reference)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run([self._out], {self._in: batch})[0]
        return out

    def close(self) -> None:
        self.session = None

    def _verify(self, model: Any) -> None:
        """Compare the converted graph with Keras on a random batch."""
        shape = tuple(4 if d is None else d for d in self.input_shape)
        rng = np.random.default_rng(0)
        batch = rng.uniform(0, 1, size=(3, *shape)).astype(self.input_dtype)
        expected = np.asarray(model.predict_on_batch(batch))
        got = self.predict(batch)
        if got.shape != expected.shape or not np.allclose(
            got, expected, atol=VERIFY_ATOL, rtol=VERIFY_RTOL
        ):
            diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else "shape"
            raise EngineError(f"the ONNX conversion disagrees with Keras (max diff {diff})")


def _ort_shape(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in list(shape)[1:])


def _ort_dtype(onnx_type: str) -> np.dtype[Any]:
    if onnx_type not in _ORT_TYPES:
        raise EngineError(f"unsupported ONNX tensor type {onnx_type}")
    return np.dtype(_ORT_TYPES[onnx_type])
