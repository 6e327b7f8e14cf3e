"""Open Inference Protocol v2 over gRPC, called by a real client (``tritonclient.grpc``).

The same server answers REST and gRPC (the session's dense and image servers have both):
the same inputs give the same outputs, the same mistakes the same messages (under the
gRPC status of the REST status), and the server keeps serving after each. Requests the
client library cannot build are sent with Triton's own generated messages
(``tritonclient.grpc.service_pb2``): its proto is the published one, so this also checks
the wire format against it.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from serverkit import (
    DENSE,
    FEATURES,
    IMAGE_C,
    IMAGE_H,
    IMAGE_W,
    IMAGES,
    encode_image,
    metric_samples,
    random_pixels,
    rows,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kerasop_server.protocol.v2 import V2_TYPES
from kerasop_server.protocol.v2_grpc import MESSAGES


def client(server) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(server.grpc_target)


def grpc_infer(server, x: np.ndarray, datatype: str = "FP32", model: str = DENSE, **kw):
    tensor = tgrpc.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return client(server).infer(model, [tensor], **kw)


def rest_infer(server, x: np.ndarray, datatype: str = "FP32", model: str = DENSE) -> np.ndarray:
    """The REST answer to the same tensor, sent in the binary extension (as gRPC's raw);
    float32 again (JSON writes a float32 in its shortest form, read back as a float64)."""
    data = rest_call(server, x, datatype, model).json()["outputs"][0]["data"]
    return np.asarray(data, dtype=np.float32)


def rest_call(server, x: np.ndarray, datatype: str = "FP32", model: str = DENSE, path=""):
    chunk = x.tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(chunk)},
            }
        ]
    }
    head = httpx.Request("POST", "/", json=header).content
    return httpx.post(
        f"{server.url}/v2/models/{model}{path}/infer",
        content=head + chunk,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=30,
    )


def stub(server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))


def grpc_error(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_proto_matches_the_published_one_and_its_descriptor_is_current() -> None:
    """Every message and field of ours has the name, number and type of Triton's
    published grpc_service.proto (which tritonclient is generated from)."""
    # protoc in a process of its own: grpc_tools' protoc crashes beside TensorFlow's.
    check = subprocess.run(
        [sys.executable, "-m", "tools.protogen", "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for name, ours in MESSAGES.items():
        theirs = getattr(service_pb2, name).DESCRIPTOR
        for field in ours.DESCRIPTOR.fields:
            other = theirs.fields_by_name[field.name]
            assert (other.number, other.type, other.is_repeated) == (
                field.number,
                field.type,
                field.is_repeated,
            ), f"{name}.{field.name}"
        for nested in ours.DESCRIPTOR.nested_types:
            other = theirs.nested_types_by_name[nested.name]
            for field in nested.fields:
                assert other.fields_by_name[field.name].number == field.number


def test_health_and_metadata_equal_rest(dense_server) -> None:
    c = client(dense_server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(DENSE) and c.is_model_ready(DENSE, "1")
    server_meta = c.get_server_metadata(as_json=True)
    rest_server = httpx.get(f"{dense_server.url}/v2").json()
    assert server_meta == rest_server
    meta = c.get_model_metadata(DENSE, as_json=True)
    rest = httpx.get(f"{dense_server.url}/v2/models/{DENSE}").json()
    assert meta["name"] == rest["name"] and meta["versions"] == rest["versions"]
    assert meta["platform"] == rest["platform"] == "onnxruntime_onnx"
    for key in ("inputs", "outputs"):
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[key]] == rest[key], key
    status, message = grpc_error(lambda: c.is_model_ready(DENSE, "7"))
    assert status == "StatusCode.NOT_FOUND" and "version 7" in message
    status, message = grpc_error(lambda: c.get_model_metadata("nope"))
    rest_error = httpx.get(f"{dense_server.url}/v2/models/nope").json()["error"]
    assert (status, message) == ("StatusCode.NOT_FOUND", rest_error)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "INT32", "INT64", "UINT8"])
def test_dense_rows_equal_rest_and_local_keras(dense_server, dense_local, datatype) -> None:
    x = np.random.default_rng(31).integers(0, 2, size=(4, FEATURES))
    x = x.astype(V2_TYPES[datatype])
    result = grpc_infer(dense_server, x, datatype, request_id="req-7")
    got = result.as_numpy("output")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (DENSE, "1", "req-7")
    assert response.raw_output_contents  # raw in, raw out (tritonclient's convention)
    assert got.dtype == np.float32 and got.shape == (4, 1)
    np.testing.assert_array_equal(got.ravel(), rest_infer(dense_server, x, datatype))
    expected = dense_local.predict(x.astype("float32"), verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_typed_contents_give_typed_contents(dense_server) -> None:
    """Without raw_input_contents the answer comes in typed contents (Triton's proto)."""
    x = rows(3, seed=32)
    request = service_pb2.ModelInferRequest(model_name=DENSE, model_version="1", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, FEATURES])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = stub(dense_server).ModelInfer(request)
    assert not response.raw_output_contents
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output", "FP32", [3, 1])
    got = np.array(out.contents.fp32_contents, dtype=np.float32)
    np.testing.assert_array_equal(got, rest_infer(dense_server, x))
    # ... unless the client asks for binary outputs, as Triton's clients do
    request.outputs.add(name="output").parameters["binary_data"].bool_param = True
    raw = stub(dense_server).ModelInfer(request).raw_output_contents[0]
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), got)


def test_images_as_pixels_and_encoded_equal_rest(image_server, image_local) -> None:
    meta = client(image_server).get_model_metadata(IMAGES, as_json=True)
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": ["-1", str(IMAGE_H), str(IMAGE_W), "3"]}
    ]  # REST's "parameters" (also_accepts BYTES) has no field in the message
    pixels = np.stack([random_pixels(IMAGE_H, IMAGE_W, IMAGE_C, seed=s) for s in (1, 2)])
    got = grpc_infer(image_server, pixels, "UINT8", model=IMAGES).as_numpy("output")
    np.testing.assert_array_equal(got.ravel(), rest_infer(image_server, pixels, "UINT8", IMAGES))
    np.testing.assert_allclose(
        got, image_local.predict(pixels.astype("float32"), verbose=0), atol=1e-5
    )

    encoded = np.array([encode_image(p) for p in pixels], dtype=np.object_)
    tensor = tgrpc.InferInput("input", [2], "BYTES")
    tensor.set_data_from_numpy(encoded)
    from_png = client(image_server).infer(IMAGES, [tensor]).as_numpy("output")
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [2],
                "datatype": "BYTES",
                "data": [base64.b64encode(e).decode() for e in encoded],
            }
        ]
    }
    rest = httpx.post(f"{image_server.url}/v2/models/{IMAGES}/infer", json=body).json()
    np.testing.assert_array_equal(from_png.ravel(), np.float32(rest["outputs"][0]["data"]))
    np.testing.assert_array_equal(from_png, got)  # PNG is lossless


def test_mistakes_get_the_rest_message_under_a_grpc_code_and_the_server_stays(dense_server):
    c = client(dense_server)
    x = rows(1, seed=33)
    cases = [
        # (what gRPC sends, the same mistake over REST, the expected code)
        (lambda: grpc_infer(dense_server, x > 0.5, "BOOL"),
         lambda: rest_call(dense_server, x > 0.5, "BOOL"), "INVALID_ARGUMENT"),
        (lambda: grpc_infer(dense_server, rows(1)[:, :100]),
         lambda: rest_call(dense_server, rows(1)[:, :100]), "INVALID_ARGUMENT"),
        (lambda: grpc_infer(dense_server, x, model="nope"),
         lambda: rest_call(dense_server, x, model="nope"), "NOT_FOUND"),
        (lambda: grpc_infer(dense_server, x, model_version="7"),
         lambda: rest_call(dense_server, x, path="/versions/7"), "NOT_FOUND"),
        (lambda: grpc_infer(dense_server, x, model_version="latest"),
         lambda: rest_call(dense_server, x, path="/versions/latest"), "NOT_FOUND"),
    ]  # fmt: skip
    for send, rest, code in cases:
        status, message = grpc_error(send)
        assert status == f"StatusCode.{code}", message
        assert message == rest().json()["error"]
    # a raw tensor whose size does not match its shape
    request = service_pb2.ModelInferRequest(model_name=DENSE)
    request.inputs.add(name="input", datatype="FP32", shape=[2, FEATURES])
    request.raw_input_contents.append(x.tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stub(dense_server).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes of binary data do not hold shape [2, 784]" in info.value.details()
    # typed contents of another type than the datatype
    request = service_pb2.ModelInferRequest(model_name=DENSE)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    tensor.contents.int_contents.extend([1, 2])
    with pytest.raises(grpc.RpcError) as info:
        stub(dense_server).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "input 'input': datatype 'FP32' takes contents.fp32_contents, got contents.int_contents"
    )
    # not a ModelInferRequest at all
    channel = grpc.insecure_channel(dense_server.grpc_target)
    garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as info:
        garbage(b"\x0a\xff")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "malformed ModelInferRequest message"
    # larger than the body limit (256 KiB): refused before it is read, as REST's 413
    big = rows(100, seed=34)
    status, message = grpc_error(lambda: grpc_infer(dense_server, big))
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and str(256 * 1024) in message
    rest = rest_call(dense_server, big)
    assert rest.status_code == 413 and str(256 * 1024) in rest.json()["error"]
    # still serving
    assert c.is_server_live()
    got = grpc_infer(dense_server, x).as_numpy("output")
    np.testing.assert_array_equal(got.ravel(), rest_infer(dense_server, x))


def test_calls_are_counted_in_the_request_metrics(dense_server) -> None:
    def count(endpoint: str, code: str) -> float:
        text = httpx.get(f"{dense_server.url}/metrics").text
        samples = metric_samples(text, "kerasop_server_requests_total")
        return samples.get((("code", code), ("endpoint", endpoint)), 0.0)

    before_ok, before_404 = count("grpc_model_infer", "200"), count("grpc_model_infer", "404")
    x = rows(1, seed=35)
    for _ in range(3):
        grpc_infer(dense_server, x)
    grpc_error(lambda: grpc_infer(dense_server, x, model="nope"))
    assert count("grpc_model_infer", "200") == before_ok + 3
    assert count("grpc_model_infer", "404") == before_404 + 1
    text = httpx.get(f"{dense_server.url}/metrics").text
    latency = metric_samples(text, "kerasop_server_request_duration_seconds_count")
    assert latency[(("endpoint", "grpc_model_infer"),)] >= 4
