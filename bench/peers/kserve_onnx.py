"""KServe's ModelServer running an ONNX file with ONNX Runtime (one thread).

Run by bench/serving_peers.py in the KServe venv (bench/setup_peers.sh):
    KSERVE_LOGLEVEL=WARNING python kserve_onnx.py MODEL_NAME MODEL.onnx PORT GRPC_PORT
Serves v1 (``/v1/models/M:predict``) and v2 (JSON and binary tensors), and OIP v2
over gRPC on GRPC_PORT (0: off), the way a KServe user writes a custom predictor: a
``kserve.Model`` subclass.

Nothing is logged per request, as by the other servers of the benchmark: latency
logging off (``enable_latency_logging=False``), uvicorn's access log off (what uvicorn's
``--no-access-log`` does: no handler on ``uvicorn.access``), and KServe's gRPC
interceptor's "grpc method" line (INFO) below the level KSERVE_LOGLEVEL sets.
No batching: KServe's batcher is the agent sidecar's (Go, v1 HTTP only), not the
ModelServer's.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = session(self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            out = self._run(payload.inputs[0].as_numpy())
            # set_data_from_numpy, as KServe's docs write it: an array passed as ``data``
            # breaks KServe 0.21's gRPC answer for more than one element (a truth test of it)
            output = InferOutput("output", list(out.shape), "FP32")
            output.set_data_from_numpy(out, binary_data=payload.use_binary_outputs)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=[output],
                use_binary_outputs=payload.use_binary_outputs,
            )
        out = self._run(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": out.tolist()}


if __name__ == "__main__":
    name, path, port, grpc_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    server = ModelServer(
        http_port=port,
        grpc_port=grpc_port,
        workers=1,
        enable_grpc=grpc_port > 0,
        enable_latency_logging=False,
    )  # configures KServe's and uvicorn's loggers
    access = logging.getLogger("uvicorn.access")
    access.handlers = []  # uvicorn reads hasHandlers() per connection: no access log
    access.propagate = False
    server.start([OnnxModel(name, path)])
