"""An MLServer custom runtime running an ONNX file with ONNX Runtime (one thread).

bench/serving_peers.py writes ``settings.json`` (``debug: false``: no access log
over REST or gRPC; ``parallel_workers`` 1 or 0) and ``model-settings.json``
(adaptive batching on with ``max_batch_size``/``max_batch_time``, or off) beside a
copy of this file and starts ``mlserver start DIR`` in the MLServer venv
(bench/setup_peers.sh), once per configuration (mlserver, mlserver-nobatch,
mlserver-w0). MLServer speaks v2 only (REST JSON and gRPC; no v1).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = await get_model_uri(self._settings)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        out = self.session.run(None, {self.input_name: batch})[0]
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("output", out)],
        )
