"""Models that take strings, trained by the real trainer and served over real HTTP.

A mixed numeric/categorical table (StringLookup inside) and a text classifier
(TextVectorization inside) have no model.onnx: the server picks the Keras engine
by itself, says why in its metadata, and takes raw rows in both protocols.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from serverkit import free_port, running_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

from kerasop.spec import KerasTrainingJob
from kerasop_trainer import sample_data
from kerasop_trainer.train import run

# Not the CSV's order: requests follow metadata.json's input.columns (the CSV order).
TABLE_COLUMNS = ["age", "city", "monthly_spend", "plan"]


def _job(name: str, data: dict[str, Any], layers: list[dict[str, Any]], epochs: int):
    return KerasTrainingJob.model_validate(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasTrainingJob",
            "metadata": {"name": name},
            "spec": {
                "data": data,
                "model": {"layers": layers},
                "training": {"seed": 1, "epochs": epochs, "batchSize": 32, "learningRate": 0.01},
            },
        }
    )


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    store = tmp_path_factory.mktemp("store")
    sample_data.write_mixed_csv(data / "mixed.csv", rows=300)
    sample_data.write_text_csv(data / "reviews.csv", rows=300)
    table = {
        "format": "csv",
        "path": "mixed.csv",
        "labelColumn": "churn",
        "featureColumns": TABLE_COLUMNS,
        "validationSplit": 0.2,
    }
    dense = [
        {"type": "Dense", "units": 8, "activation": "relu"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
    run(_job("churn", table, dense, 3), data, store, "churn-1", emit=_quiet)
    text = {
        "format": "text",
        "path": "reviews.csv",
        "validationSplit": 0.2,
        "text": {"maxTokens": 100, "sequenceLength": 12},
    }
    pooled = [
        {"type": "Embedding", "outputDim": 8},
        {"type": "GlobalAveragePooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
    run(_job("reviews", text, pooled, 3), data, store, "reviews-1", emit=_quiet)
    return store


def _local_predict(vdir: Path, inputs: Any) -> np.ndarray:
    import keras

    model = keras.saving.load_model(vdir / "model.keras", compile=False)
    return np.asarray(model.predict(inputs, verbose=0))


ROWS = [
    [25, "berlin", 40.0, "basic"],
    [70, "atlantis", 40.0, "team"],  # "atlantis" was never seen in training
    [44, "paris", 310.5, "pro"],
]


def test_mixed_table_served_with_raw_rows_in_both_protocols(store):
    import tensorflow as tf

    vdir = store / "churn" / "1"
    assert not (vdir / "model.onnx").exists()
    expected = _local_predict(
        vdir,
        {
            "features": np.array([[r[0], r[2]] for r in ROWS], dtype="float32"),
            "city": tf.constant([[r[1]] for r in ROWS]),
            "plan": tf.constant([[r[3]] for r in ROWS]),
        },
    )
    with running_server(store, "churn", grpc_port=free_port()) as server:
        url = f"{server.url}/v1/models/churn"
        meta = httpx.get(f"{url}/metadata").json()
        assert meta["kerasop"]["engine"] == "keras"
        assert "strings" in meta["kerasop"]["engineReason"]
        inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
        assert list(inputs) == TABLE_COLUMNS
        assert inputs["city"]["dtype"] == "DT_STRING" and inputs["age"]["dtype"] == "DT_FLOAT"

        r = httpx.post(f"{url}:predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5, atol=1e-6)

        named = [dict(zip(TABLE_COLUMNS, row, strict=True)) for row in ROWS]
        r = httpx.post(f"{url}:predict", json={"instances": named})
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5, atol=1e-6)

        columns = {c: [row[j] for row in ROWS] for j, c in enumerate(TABLE_COLUMNS)}
        r = httpx.post(f"{url}:predict", json={"inputs": columns})
        np.testing.assert_allclose(r.json()["outputs"], expected, rtol=1e-5, atol=1e-6)

        v2 = f"{server.url}/v2/models/churn"
        model_meta = httpx.get(v2).json()
        assert model_meta["parameters"]["engine"] == "keras"
        assert {i["name"]: i["datatype"] for i in model_meta["inputs"]} == {
            "age": "FP32",
            "city": "BYTES",
            "monthly_spend": "FP32",
            "plan": "BYTES",
        }
        tensors = [
            {
                "name": c,
                "shape": [len(ROWS), 1] if c == "plan" else [len(ROWS)],
                "datatype": "BYTES" if c in ("city", "plan") else "FP64",
                "data": columns[c],
            }
            for c in TABLE_COLUMNS
        ]
        r = httpx.post(f"{v2}/infer", json={"inputs": tensors})
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [len(ROWS), 1]
        np.testing.assert_allclose(np.reshape(out["data"], (-1, 1)), expected, rtol=1e-5, atol=1e-6)

        # gRPC (tritonclient: raw contents): the same columns, the same answer
        grpc_columns = []
        for c in TABLE_COLUMNS:
            strings = c in ("city", "plan")
            values = np.array(columns[c], dtype=np.object_ if strings else np.float32)
            tensor = tgrpc.InferInput(c, [len(ROWS)], "BYTES" if strings else "FP32")
            tensor.set_data_from_numpy(values)
            grpc_columns.append(tensor)
        got = tgrpc.InferenceServerClient(server.grpc_target).infer("churn", grpc_columns)
        rest_out = np.asarray(out["data"], dtype=np.float32).reshape(-1, 1)
        np.testing.assert_array_equal(got.as_numpy("output"), rest_out)
        # ... and in typed contents (Triton's generated messages)
        request = service_pb2.ModelInferRequest(model_name="churn")
        for c in TABLE_COLUMNS:
            tensor = request.inputs.add(name=c, shape=[len(ROWS)])
            if c in ("city", "plan"):
                tensor.datatype = "BYTES"
                tensor.contents.bytes_contents.extend(v.encode() for v in columns[c])
            else:
                tensor.datatype = "FP64"
                tensor.contents.fp64_contents.extend(columns[c])
        channel = grpc.insecure_channel(server.grpc_target)
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        typed_out = np.float32(typed.outputs[0].contents.fp32_contents).reshape(-1, 1)
        np.testing.assert_array_equal(typed_out, rest_out)

        # wrong types and shapes: 4xx with a reason, and the server stays up
        bad = [
            (f"{url}:predict", {"instances": [[25, 3, 40.0, "basic"]]}, "takes strings"),
            (f"{url}:predict", {"instances": [["25", "berlin", 40.0, "basic"]]}, "numbers"),
            (f"{url}:predict", {"instances": [[25, "berlin", 40.0]]}, "expected one row"),
            (f"{url}:predict", {"instances": [{"age": 1, "town": "x"}]}, "not this model"),
            (
                f"{v2}/infer",
                {
                    "inputs": [
                        {**t, "datatype": "FP32"} if t["name"] == "city" else t for t in tensors
                    ]
                },
                "takes BYTES",
            ),
            (f"{v2}/infer", {"inputs": tensors[:2]}, "every column"),
        ]
        for target, body, reason in bad:
            r = httpx.post(target, json=body)
            assert r.status_code == 400, (body, r.text)
            assert reason in r.json()["error"], r.json()
        assert httpx.post(f"{url}:predict", json={"instances": ROWS[:1]}).status_code == 200


TEXTS = ["What a lovely, friendly and clean hotel!", "Rude staff, cold dirty room.", "zzz qqq"]


def test_text_classifier_served_with_raw_strings_in_both_protocols(store):
    import tensorflow as tf

    vdir = store / "reviews" / "1"
    assert not (vdir / "model.onnx").exists()
    expected = _local_predict(vdir, tf.constant([[t] for t in TEXTS]))
    with running_server(store, "reviews", grpc_port=free_port()) as server:
        url = f"{server.url}/v1/models/reviews"
        assert httpx.get(f"{url}/metadata").json()["kerasop"]["engine"] == "keras"
        r = httpx.post(f"{url}:predict", json={"instances": TEXTS})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
        r = httpx.post(f"{url}:predict", json={"instances": [{"text": t} for t in TEXTS]})
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5, atol=1e-6)

        v2 = f"{server.url}/v2/models/reviews"
        model_meta = httpx.get(v2).json()
        assert model_meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert "ONNX cannot hold" in model_meta["parameters"]["engineReason"]
        body = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}]}
        r = httpx.post(f"{v2}/infer", json=body)
        assert r.status_code == 200, r.text
        got = np.reshape(r.json()["outputs"][0]["data"], (-1, 1))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

        # the binary tensor extension: 4-byte length, then the UTF-8 bytes, per element
        chunk = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in TEXTS)
        header = {
            "inputs": [
                {
                    "name": "text",
                    "shape": [3],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(chunk)},
                }
            ]
        }
        head = httpx.Request("POST", "/", json=header).content
        r = httpx.post(
            f"{v2}/infer",
            content=head + chunk,
            headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 200, r.text
        got = np.reshape(r.json()["outputs"][0]["data"], (-1, 1))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

        # gRPC: one BYTES tensor of UTF-8 strings (raw contents, as tritonclient sends them)
        tensor = tgrpc.InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
        answer = tgrpc.InferenceServerClient(server.grpc_target).infer("reviews", [tensor])
        np.testing.assert_array_equal(answer.as_numpy("output"), np.float32(got))

        for body, reason in [
            (
                {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
                "takes BYTES",
            ),
            (
                {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]},
                "takes strings",
            ),
        ]:
            r = httpx.post(f"{v2}/infer", json=body)
            assert r.status_code == 400 and reason in r.json()["error"], r.text
        r = httpx.post(f"{url}:predict", json={"instances": [3.5]})
        assert r.status_code == 400 and "takes strings" in r.json()["error"], r.text
