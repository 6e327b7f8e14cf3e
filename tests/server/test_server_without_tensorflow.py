"""The slim serving image has ONNX Runtime but no TensorFlow, Keras or JAX.

A server process in which those cannot be imported serves a version that
ships ``model.onnx`` over both protocols, and refuses a version without it
with a reason that names the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from serverkit import DENSE, FEATURES, dense_metadata, dense_model, free_port, rows

from kerasop.store import ModelStore

# Run in a fresh interpreter: imports of the heavy frameworks fail there.
SERVER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in ("tensorflow", "keras", "jax", "tf2onnx"):
        sys.modules[name] = None  # `import name` now raises ImportError
    import httpx
    import numpy as np
    import tritonclient.grpc as tgrpc
    from kerasop_server.config import ServerConfig
    from kerasop_server.runner import BackgroundServer

    root, rows, grpc_port = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    config = ServerConfig(
        store_root=root, model="{model}", host="127.0.0.1", port=0, grpc_port=grpc_port
    )
    server = BackgroundServer(config)
    server.start(wait_ready=False)
    ready = False
    try:
        server.wait_ready(60)
        ready = True
    except Exception:
        pass
    out = {{"ready": ready, "reason": server.manager.not_ready_reason()}}
    if ready:
        tensor = {{"name": "input", "shape": [len(rows), {features}], "datatype": "FP32",
                  "data": [x for row in rows for x in row]}}
        v2 = httpx.post(server.url + "/v2/models/{model}/infer", json={{"inputs": [tensor]}})
        v1 = httpx.post(server.url + "/v1/models/{model}:predict", json={{"instances": rows}})
        grpc_in = tgrpc.InferInput("input", [len(rows), {features}], "FP32")
        grpc_in.set_data_from_numpy(np.array(rows, dtype=np.float32))
        answer = tgrpc.InferenceServerClient(server.grpc_target).infer("{model}", [grpc_in])
        out.update(
            v2=v2.json()["outputs"][0]["data"],
            v1=v1.json()["predictions"],
            grpc=answer.as_numpy("output").tolist(),
        )
    out["heavy"] = [m for m in ("tensorflow", "keras", "jax") if sys.modules.get(m) is not None]
    server.stop()
    print(json.dumps(out))
    """
).format(model=DENSE, features=FEATURES)


def run_server(root: Path, x: np.ndarray) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT, str(root), json.dumps(x.tolist()),
         str(free_port())],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def publish(root: Path, with_onnx: bool) -> None:
    from kerasop_server.engines import ONNX_FILE, convert_to_onnx

    model = dense_model()
    with ModelStore(root).new_version(DENSE) as pending:
        model.save(pending.path / "model.keras")
        if with_onnx:
            (pending.path / ONNX_FILE).write_bytes(convert_to_onnx(model))
        (pending.path / "metadata.json").write_text(json.dumps(dense_metadata()))


def test_serves_model_onnx_without_tensorflow(tmp_path, dense_local) -> None:
    publish(tmp_path, with_onnx=True)
    x = rows(2, seed=5)
    out = run_server(tmp_path, x)
    assert out["ready"], out["reason"]
    assert out["heavy"] == []
    expected = dense_local.predict(x, verbose=0)
    np.testing.assert_allclose(np.reshape(out["v2"], (2, 1)), expected, atol=1e-5)
    np.testing.assert_allclose(out["v1"], expected, atol=1e-5)
    np.testing.assert_allclose(out["grpc"], expected, atol=1e-5)  # gRPC needs no TensorFlow


def test_version_without_model_onnx_names_the_fix(tmp_path) -> None:
    publish(tmp_path, with_onnx=False)
    out = run_server(tmp_path, rows(1))
    assert not out["ready"]
    assert "model.onnx" in out["reason"] and "kerasop-runtime" in out["reason"], out["reason"]
