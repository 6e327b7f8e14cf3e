"""TF Serving REST (v1) over real HTTP: status, metadata, row and columnar predict."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from serverkit import DENSE, FEATURES, rows

ATOL = 1e-5


@pytest.fixture(params=["dense_server", "dense_server_keras"], ids=["auto-engine", "keras-engine"])
def server(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


def test_model_status_lists_the_available_version(dense_server) -> None:
    r = httpx.get(f"{dense_server.url}/v1/models/{DENSE}")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    r = httpx.get(f"{dense_server.url}/v1/models/{DENSE}/versions/1")
    assert r.status_code == 200
    assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_metadata_describes_the_signature(dense_server) -> None:
    r = httpx.get(f"{dense_server.url}/v1/models/{DENSE}/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"] == {"name": DENSE, "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"
    dims = [d["size"] for d in sig["inputs"]["input"]["tensor_shape"]["dim"]]
    assert dims == ["-1", str(FEATURES)]
    assert [d["size"] for d in sig["outputs"]["output"]["tensor_shape"]["dim"]] == ["-1", "1"]
    assert body["kerasop"]["metadata"]["output"]["classNames"] == ["no", "yes"]
    assert body["kerasop"]["engine"] == "onnx"  # the default (auto) engine, see docs/serving.md


def test_engines_as_configured(dense_server, dense_server_keras) -> None:
    assert dense_server.manager.current.engine.name == "onnx"
    assert dense_server_keras.manager.current.engine.name == "keras"


def test_row_format_predictions_equal_local_keras(server, dense_local) -> None:
    x = rows(5, seed=11)
    r = httpx.post(f"{server.url}/v1/models/{DENSE}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["predictions"])
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, dense_local.predict(x, verbose=0), atol=ATOL)


def test_columnar_format_predictions_equal_local_keras(server, dense_local) -> None:
    x = rows(3, seed=12)
    expected = dense_local.predict(x, verbose=0)
    for inputs in (x.tolist(), {"input": x.tolist()}):
        r = httpx.post(f"{server.url}/v1/models/{DENSE}:predict", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"outputs"}
        np.testing.assert_allclose(np.array(r.json()["outputs"]), expected, atol=ATOL)


def test_named_inputs_in_row_format(dense_server, dense_local) -> None:
    x = rows(2, seed=13)
    expected = dense_local.predict(x, verbose=0)
    names = [f"pixel{i}" for i in range(FEATURES)]
    bodies = [
        {"instances": [{"input": row} for row in x.tolist()]},
        {"instances": [{"features": row} for row in x.tolist()]},  # the Keras Input's name
        {"instances": [dict(zip(names, row, strict=True)) for row in x.tolist()]},  # featureNames
        {"inputs": {name: x[:, i].tolist() for i, name in enumerate(names)}},  # columns by feature
    ]
    for body in bodies:
        r = httpx.post(f"{dense_server.url}/v1/models/{DENSE}:predict", json=body)
        assert r.status_code == 200, r.text
        got = r.json().get("predictions", r.json().get("outputs"))
        np.testing.assert_allclose(np.array(got), expected, atol=ATOL)


def test_versioned_predict_and_signature_name(dense_server, dense_local) -> None:
    x = rows(1, seed=14)
    r = httpx.post(
        f"{dense_server.url}/v1/models/{DENSE}/versions/1:predict",
        json={"signature_name": "serving_default", "instances": x.tolist()},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        r.json()["predictions"], dense_local.predict(x, verbose=0), atol=ATOL
    )
    r = httpx.post(
        f"{dense_server.url}/v1/models/{DENSE}/versions/2:predict", json={"instances": x.tolist()}
    )
    assert r.status_code == 404
    assert "version 2" in r.json()["error"]


def test_integer_features_are_accepted(dense_server, dense_local) -> None:
    x = np.random.default_rng(15).integers(0, 2, size=(2, FEATURES))
    r = httpx.post(f"{dense_server.url}/v1/models/{DENSE}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    expected = dense_local.predict(x.astype("float32"), verbose=0)
    np.testing.assert_allclose(r.json()["predictions"], expected, atol=ATOL)
