"""Open Inference Protocol (KServe v2) over real HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from serverkit import DENSE, FEATURES, rows

ATOL = 1e-5


def test_health_and_server_metadata(dense_server) -> None:
    url = dense_server.url
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    r = httpx.get(f"{url}/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})
    assert httpx.get(f"{url}/healthz").status_code == 200
    meta = httpx.get(f"{url}/v2").json()
    assert meta["name"] == "kerasop-server"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(dense_server) -> None:
    url = dense_server.url
    meta = httpx.get(f"{url}/v2/models/{DENSE}").json()
    assert meta["name"] == DENSE
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]
    assert httpx.get(f"{url}/v2/models/{DENSE}/versions/1").status_code == 200
    r = httpx.get(f"{url}/v2/models/{DENSE}/ready")
    assert (r.status_code, r.json()["ready"]) == (200, True)
    assert httpx.get(f"{url}/v2/models/{DENSE}/versions/1/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/{DENSE}/versions/7/ready").status_code == 404


@pytest.mark.parametrize("server_fixture", ["dense_server", "dense_server_keras"])
def test_infer_equals_local_keras(request, server_fixture, dense_local) -> None:
    server = request.getfixturevalue(server_fixture)
    x = rows(4, seed=21)
    body = {
        "id": "req-42",
        "inputs": [
            {
                "name": "input",
                "shape": [4, FEATURES],
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ],
    }
    r = httpx.post(f"{server.url}/v2/models/{DENSE}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-42"
    assert out["model_name"] == DENSE
    assert out["model_version"] == "1"
    (tensor,) = out["outputs"]
    assert tensor["name"] == "output"
    assert tensor["shape"] == [4, 1]
    assert tensor["datatype"] == "FP32"
    got = np.array(tensor["data"]).reshape(tensor["shape"])
    np.testing.assert_allclose(got, dense_local.predict(x, verbose=0), atol=ATOL)


def test_infer_nested_data_other_dtypes_and_versioned_path(dense_server, dense_local) -> None:
    x = np.random.default_rng(22).integers(0, 3, size=(2, FEATURES))
    expected = dense_local.predict(x.astype("float32"), verbose=0)
    for datatype in ("FP64", "FP32", "INT32", "INT64", "UINT8", "INT8", "FP16"):
        body = {
            "inputs": [
                {"name": "input", "shape": [2, FEATURES], "datatype": datatype, "data": x.tolist()}
            ],
            "outputs": [{"name": "output"}],
        }
        r = httpx.post(f"{dense_server.url}/v2/models/{DENSE}/versions/1/infer", json=body)
        assert r.status_code == 200, (datatype, r.text)
        assert "id" not in r.json()
        got = np.array(r.json()["outputs"][0]["data"]).reshape(2, 1)
        np.testing.assert_allclose(got, expected, atol=ATOL, err_msg=datatype)


def test_binary_tensor_data_extension(dense_server, dense_local) -> None:
    x = rows(3, seed=23)
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [3, FEATURES],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    r = httpx.post(
        f"{dense_server.url}/v2/models/{DENSE}/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    got = np.array(r.json()["outputs"][0]["data"]).reshape(3, 1)
    np.testing.assert_allclose(got, dense_local.predict(x, verbose=0), atol=ATOL)
    # A binary part that does not match the declared size is a client error.
    r = httpx.post(
        f"{dense_server.url}/v2/models/{DENSE}/infer",
        content=header + raw[:-4],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400
    assert "binary" in r.json()["error"]


@pytest.mark.parametrize("how", ["request", "output"])
def test_binary_output_on_request(dense_server, dense_local, how) -> None:
    """binary_data_output (whole request) or binary_data (one output): the
    answer's tensor follows its JSON header as little-endian bytes."""
    x = rows(2, seed=29)
    body: dict = {"id": "b1", "inputs": [{"name": "input", "shape": [2, FEATURES], "datatype": "FP32", "data": x.ravel().tolist()}]}  # fmt: skip
    if how == "request":
        body["parameters"] = {"binary_data_output": True}
    else:
        body["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    r = httpx.post(f"{dense_server.url}/v2/models/{DENSE}/infer", json=body)
    assert r.status_code == 200, r.text
    length = int(r.headers["Inference-Header-Content-Length"])
    header = json.loads(r.content[:length])
    assert header["id"] == "b1"
    (tensor,) = header["outputs"]
    assert "data" not in tensor and tensor["shape"] == [2, 1] and tensor["datatype"] == "FP32"
    assert tensor["parameters"]["binary_data_size"] == len(r.content) - length == 2 * 4
    got = np.frombuffer(r.content[length:], dtype="<f4").reshape(2, 1)
    np.testing.assert_allclose(got, dense_local.predict(x, verbose=0), atol=ATOL)
