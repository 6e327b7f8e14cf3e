"""ONNX export of a Keras model: used by the trainer (``model.onnx`` beside ``model.keras``)
and by the server (converting at load time when a version has no ``model.onnx``).

Keras, NumPy and tf2onnx are imported by the caller's process only when a
model is converted; importing this module costs nothing.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from kerasop.store import ONNX_FILE


class ExportError(RuntimeError):
    """The model could not be converted to ONNX (the message says why)."""


def convert_to_onnx(model: Any) -> bytes:
    """``model.export(format="onnx")`` into a temporary file; returns the graph."""
    import numpy as np

    try:
        import tf2onnx  # noqa: F401 - Keras imports it lazily; fail early and clearly
    except ImportError as exc:
        raise ExportError("tf2onnx is not installed") from exc
    shape = tuple(1 if d is None else int(d) for d in tuple(model.inputs[0].shape)[1:])
    dtype = str(getattr(model.inputs[0], "dtype", "float32"))
    # A freshly loaded model has never been called; export refuses such models.
    model.predict_on_batch(np.zeros((1, *shape), dtype=dtype))
    with tempfile.TemporaryDirectory(prefix="kerasop-onnx-") as tmp:
        target = Path(tmp) / ONNX_FILE
        try:
            with warnings.catch_warnings():  # tf2onnx's numpy-2 shims warn on every export
                warnings.simplefilter("ignore", FutureWarning)
                model.export(str(target), format="onnx", verbose=False)
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {exc}") from exc
        graph = target.read_bytes()
    _check_servable(graph)
    return graph


def _check_servable(graph: bytes) -> None:
    """The server runs graphs of one input and one output (kerasop_server.engines); refuse
    others here, so that no version claims a ``model.onnx`` the server cannot load (it would
    then be sent to the slim, ONNX-only image). Keras exports an adapted ``Normalization``
    layer's statistics as extra graph inputs, for example."""
    import onnx

    g = onnx.load_model_from_string(graph).graph
    initializers = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in initializers]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ExportError(
            f"the ONNX graph has {len(inputs)} inputs ({', '.join(inputs)}) and"
            f" {len(g.output)} outputs; the server needs one of each"
        )
