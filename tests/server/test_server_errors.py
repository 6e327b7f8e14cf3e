"""Malformed requests: each answered 4xx with {"error": ...}; the server keeps serving.

One model failure (an engine that raises on a sentinel input) is a 500 with
{"error": ...}, and the next request is served normally.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from serverkit import DENSE, FEATURES, IMAGES, b64, rows, running_server

ROW = [0.5] * FEATURES
V1 = f"/v1/models/{DENSE}:predict"
V2 = f"/v2/models/{DENSE}/infer"
IMG_V1 = f"/v1/models/{IMAGES}:predict"
IMG_V2 = f"/v2/models/{IMAGES}/infer"


def v2_body(**tensor: Any) -> dict[str, Any]:
    base = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": ROW}
    base.update(tensor)
    return {"inputs": [base]}


def nested(depth: int) -> str:
    return '{"instances": ' + "[" * depth + "]" * depth + "}"


# (id, server, method, path, body: JSON value, or str/bytes sent raw, status)
CASES: list[tuple[str, str, str, str, Any, int]] = [
    ("invalid-json-v1", "dense", "POST", V1, b'{"instances": [[1, 2}', 400),
    ("invalid-json-v2", "dense", "POST", V2, b"not json at all", 400),
    ("invalid-utf8", "dense", "POST", V1, b'{"instances": "\xff\xfe"}', 400),
    ("empty-body", "dense", "POST", V1, b"", 400),
    ("body-not-object", "dense", "POST", V1, [ROW], 400),
    ("deeply-nested-json", "dense", "POST", V1, nested(100_000).encode(), 400),
    ("missing-instances", "dense", "POST", V1, {"rows": [ROW]}, 400),
    ("both-formats", "dense", "POST", V1, {"instances": [ROW], "inputs": [ROW]}, 400),
    ("instances-not-list", "dense", "POST", V1, {"instances": 3}, 400),
    ("instances-empty", "dense", "POST", V1, {"instances": []}, 400),
    ("wrong-shape-v1", "dense", "POST", V1, {"instances": [ROW[:-1]]}, 400),
    ("wrong-rank-v1", "dense", "POST", V1, {"instances": ROW}, 400),
    ("strings-v1", "dense", "POST", V1, {"instances": [["a"] * FEATURES]}, 400),
    ("numeric-strings-v1", "dense", "POST", V1, {"instances": [["1.5"] * FEATURES]}, 400),
    ("null-values-v1", "dense", "POST", V1, {"instances": [[None] * FEATURES]}, 400),
    ("booleans-v1", "dense", "POST", V1, {"instances": [[True] * FEATURES]}, 400),
    ("nan-v1", "dense", "POST", V1, b'{"instances": [[' + b", ".join([b"NaN"] * FEATURES) + b"]]}", 400),
    ("ragged-v1", "dense", "POST", V1, {"instances": [ROW, ROW[:10]]}, 400),
    ("ragged-deep-v1", "dense", "POST", V1, {"instances": [ROW, [ROW]]}, 400),
    ("huge-integer-v1", "dense", "POST", V1, {"instances": [[10**40] * FEATURES]}, 400),
    ("unknown-input-name-v1", "dense", "POST", V1, {"instances": [{"x": ROW}]}, 400),
    ("unknown-signature-v1", "dense", "POST", V1, {"signature_name": "nope", "instances": [ROW]}, 400),
    ("classify-v1", "dense", "POST", f"/v1/models/{DENSE}:classify", {"examples": []}, 400),
    ("missing-inputs-v2", "dense", "POST", V2, {"id": "x"}, 400),
    ("inputs-empty-v2", "dense", "POST", V2, {"inputs": []}, 400),
    ("two-inputs-v2", "dense", "POST", V2, {"inputs": v2_body()["inputs"] * 2}, 400),
    ("unknown-input-v2", "dense", "POST", V2, v2_body(name="pixels"), 400),
    ("wrong-shape-v2", "dense", "POST", V2, v2_body(shape=[1, FEATURES - 1], data=ROW[:-1]), 400),
    ("shape-data-mismatch-v2", "dense", "POST", V2, v2_body(shape=[2, FEATURES]), 400),
    ("bad-shape-field-v2", "dense", "POST", V2, v2_body(shape="1x784"), 400),
    ("negative-shape-v2", "dense", "POST", V2, v2_body(shape=[-1, FEATURES]), 400),
    ("strings-v2", "dense", "POST", V2, v2_body(data=["x"] * FEATURES), 400),
    ("numeric-strings-v2", "dense", "POST", V2, v2_body(data=["1.5"] * FEATURES), 400),
    ("null-values-v2", "dense", "POST", V2, v2_body(data=[*ROW[:-1], None]), 400),
    ("booleans-v2", "dense", "POST", V2, v2_body(data=[True] * FEATURES), 400),
    ("huge-integer-v2", "dense", "POST", V2, v2_body(data=[10**40] * FEATURES), 400),
    ("ragged-v2", "dense", "POST", V2, v2_body(data=[ROW, ROW[:3]], shape=[2, FEATURES]), 400),
    ("missing-data-v2", "dense", "POST", V2, {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32"}]}, 400),
    ("unknown-datatype-v2", "dense", "POST", V2, v2_body(datatype="FP128"), 400),
    ("bool-datatype-v2", "dense", "POST", V2, v2_body(datatype="BOOL"), 400),
    ("int8-out-of-range-v2", "dense", "POST", V2, v2_body(datatype="INT8", data=[300] * FEATURES), 400),
    ("fractional-int-v2", "dense", "POST", V2, v2_body(datatype="INT32", data=[0.5] * FEATURES), 400),
    ("bytes-for-tabular-v2", "dense", "POST", V2, v2_body(datatype="BYTES", shape=[1], data=["aGk="]), 400),
    ("unknown-output-v2", "dense", "POST", V2, {**v2_body(), "outputs": [{"name": "probs"}]}, 400),
    ("id-not-string-v2", "dense", "POST", V2, {**v2_body(), "id": 7}, 400),
    ("binary-header-too-long-v2", "dense", "POST", V2, json.dumps(v2_body()).encode(), 400),
    ("unknown-model-v1-predict", "dense", "POST", "/v1/models/nope:predict", {"instances": [ROW]}, 404),
    ("unknown-model-v1-status", "dense", "GET", "/v1/models/nope", None, 404),
    ("unknown-model-v1-metadata", "dense", "GET", "/v1/models/nope/metadata", None, 404),
    ("unknown-model-v2-infer", "dense", "POST", "/v2/models/nope/infer", v2_body(), 404),
    ("unknown-model-v2-meta", "dense", "GET", "/v2/models/nope", None, 404),
    ("unknown-model-v2-ready", "dense", "GET", "/v2/models/nope/ready", None, 404),
    ("unknown-version-v1", "dense", "POST", f"/v1/models/{DENSE}/versions/3:predict", {"instances": [ROW]}, 404),
    ("unknown-version-v1-status", "dense", "GET", f"/v1/models/{DENSE}/versions/3", None, 404),
    ("unknown-version-v1-metadata", "dense", "GET", f"/v1/models/{DENSE}/versions/3/metadata", None, 404),
    ("non-numeric-version-v1", "dense", "POST", f"/v1/models/{DENSE}/versions/latest:predict", {"instances": [ROW]}, 404),
    ("unknown-version-v2", "dense", "POST", f"/v2/models/{DENSE}/versions/3/infer", v2_body(), 404),
    ("unknown-version-v2-meta", "dense", "GET", f"/v2/models/{DENSE}/versions/3", None, 404),
    ("unknown-route", "dense", "GET", "/v3/whatever", None, 404),
    ("unknown-v1-route", "dense", "GET", f"/v1/models/{DENSE}/labels/x", None, 404),
    ("too-large-v1", "dense", "POST", V1, {"instances": [ROW] * 80}, 413),
    ("too-large-v2", "dense", "POST", V2, b"[" + b"1," * 200_000 + b"1]", 413),
    ("get-predict", "dense", "GET", V1, None, 405),
    ("post-status", "dense", "POST", f"/v1/models/{DENSE}", {"instances": [ROW]}, 405),
    ("put-metadata", "dense", "PUT", f"/v1/models/{DENSE}/metadata", {}, 405),
    ("get-infer", "dense", "GET", V2, None, 405),
    ("delete-ready", "dense", "DELETE", "/v2/health/ready", None, 405),
    ("post-metrics", "dense", "POST", "/metrics", {}, 405),
    ("garbage-b64-v1", "images", "POST", IMG_V1, {"instances": [{"b64": "%%%not base64%%%"}]}, 400),
    ("b64-not-an-image-v1", "images", "POST", IMG_V1, {"instances": [{"b64": b64(b"hello, world")}]}, 400),
    ("truncated-png-v1", "images", "POST", IMG_V1, {"instances": [{"b64": b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}]}, 400),
    ("b64-not-string-v1", "images", "POST", IMG_V1, {"instances": [{"b64": 12}]}, 400),
    ("b64-extra-keys-v1", "images", "POST", IMG_V1, {"instances": [{"b64": "aGk=", "x": 1}]}, 400),
    ("plain-string-image-v1", "images", "POST", IMG_V1, {"instances": ["aGVsbG8="]}, 400),
    ("pixels-wrong-rank-v1", "images", "POST", IMG_V1, {"instances": [[1, 2, 3]]}, 400),
    ("pixels-out-of-range-resize-v1", "images", "POST", IMG_V1, {"instances": [[[[300, 0, 0]] * 5] * 5]}, 400),
    ("pixels-5-channels-v1", "images", "POST", IMG_V1, {"instances": [[[[1] * 5] * 4] * 4]}, 400),
    ("garbage-b64-v2", "images", "POST", IMG_V2, {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}, 400),
    ("bytes-count-mismatch-v2", "images", "POST", IMG_V2, {"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}, 400),
    ("bytes-not-strings-v2", "images", "POST", IMG_V2, {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [5]}]}, 400),
    ("bytes-bad-shape-v2", "images", "POST", IMG_V2, {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["aGk=", "aGk="]}]}, 400),
]  # fmt: skip


@pytest.fixture(scope="module")
def servers(dense_server, image_server):
    return {"dense": dense_server, "images": image_server}


def send(url: str, method: str, path: str, body: Any, case: str) -> httpx.Response:
    headers = {}
    if isinstance(body, bytes | str):
        content = body.encode() if isinstance(body, str) else body
    elif body is None:
        content = None
    else:
        content = json.dumps(body).encode()
    if case == "binary-header-too-long-v2":
        headers["Inference-Header-Content-Length"] = str(len(content or b"") + 10)
    return httpx.request(method, url + path, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("case", "server", "method", "path", "body", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_request_gets_4xx_json_error(
    servers, case, server, method, path, body, status
) -> None:
    r = send(servers[server].url, method, path, body, case)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert isinstance(error, str) and error
    if status == 405:
        assert "Allow" in r.headers


def test_server_still_serves_after_the_battery(servers, dense_local) -> None:
    """Run every malformed request again, then check readiness and a real prediction."""
    for case, server, method, path, body, status in CASES:
        assert send(servers[server].url, method, path, body, case).status_code == status, case
    for server in servers.values():
        r = httpx.get(f"{server.url}/v2/health/ready")
        assert r.status_code == 200
    x = rows(2, seed=31)
    r = httpx.post(servers["dense"].url + V1, json={"instances": x.tolist()})
    assert r.status_code == 200
    np.testing.assert_allclose(
        r.json()["predictions"], dense_local.predict(x, verbose=0), atol=1e-5
    )
    text = httpx.get(servers["dense"].url + "/metrics").text
    assert 'kerasop_server_requests_total{code="400",endpoint="v1_predict"}' in text
    assert 'code="500"' not in text


def test_model_failure_is_500_and_serving_continues(dense_store) -> None:
    """A model that raises (here: on a sentinel value) answers 500 {"error"}, not a crash."""
    from kerasop_server.engines import load_engine

    class Flaky:
        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            return getattr(self._engine, name)

        def predict(self, batch):
            if np.any(batch == -12345):
                raise FloatingPointError("sentinel reached the model")
            return self._engine.predict(batch)

    def factory(kind, path, threads=0):
        return Flaky(load_engine(kind, path, threads=threads))

    with running_server(dense_store, DENSE, engine_factory=factory, max_batch_size=1) as server:
        bad = [[-12345.0] * FEATURES]
        r = httpx.post(server.url + V1, json={"instances": bad})
        assert r.status_code == 500
        assert "sentinel" in r.json()["error"]
        r = httpx.post(server.url + V2, json=v2_body(data=bad[0]))
        assert r.status_code == 500 and "error" in r.json()
        assert httpx.post(server.url + V1, json={"instances": [ROW]}).status_code == 200
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
