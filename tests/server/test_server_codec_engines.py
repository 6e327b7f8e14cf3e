"""Unit tests: request decoding details and the engines on their own."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys

import numpy as np
import pytest
from serverkit import (
    DENSE,
    FEATURES,
    IMAGE_H,
    IMAGE_W,
    dense_metadata,
    dense_model,
    encode_image,
    image_metadata,
    random_pixels,
    rows,
    write_version,
)

from kerasop_server.engines import EngineError, device_note, execution_providers, load_engine
from kerasop_server.errors import ClientError
from kerasop_server.images import MAX_IMAGE_PIXELS, b64decode, decode_image, fit_pixels
from kerasop_server.protocol.v1 import parse_v1_predict
from kerasop_server.protocol.v2 import parse_v2_infer
from kerasop_server.signature import ImageTarget, Signature


def sig_for(metadata, input_shape, output_shape=(1,)):
    return Signature.build(
        metadata,
        input_shape=input_shape,
        input_dtype="float32",
        output_shape=output_shape,
        output_dtype="float32",
    )


def test_signature_from_metadata_and_engine() -> None:
    sig = sig_for(dense_metadata(), (FEATURES,))
    assert sig.input_name == "input" and sig.output_name == "output"
    assert sig.feature_names and len(sig.feature_names) == FEATURES
    assert sig.class_names == ("no", "yes")
    img = sig_for(image_metadata(), (None, None, 3), (3,))  # free spatial dims filled from metadata
    assert img.image == ImageTarget(IMAGE_H, IMAGE_W, 3)
    assert img.input_shape == (IMAGE_H, IMAGE_W, 3)
    with pytest.raises(ValueError, match="does not match"):
        sig_for(dense_metadata(), (100,))
    with pytest.raises(ValueError, match="does not match"):
        sig_for({"input": {"shape": [784]}, "output": {"shape": [2]}}, (784,), (1,))
    named = sig_for({"input": {"name": "pixels"}, "output": {"name": "score"}}, (4,))
    assert (named.input_name, named.output_name, named.kind) == ("pixels", "score", "tabular")


def test_b64_variants() -> None:
    data = bytes(range(256))
    std = base64.b64encode(data).decode()
    assert b64decode(std, "x") == data
    assert b64decode(base64.urlsafe_b64encode(data).decode().rstrip("="), "x") == data
    assert b64decode("data:image/png;base64," + std[:40] + "\n" + std[40:], "x") == data
    for bad in ("***", "", 5):
        with pytest.raises(ClientError):
            b64decode(bad, "x")


def test_image_decoding_and_pixel_fitting() -> None:
    target = ImageTarget(IMAGE_H, IMAGE_W, 1)
    arr = decode_image(encode_image(random_pixels(50, 60)), target, "x")
    assert arr.shape == (IMAGE_H, IMAGE_W, 1) and arr.dtype == np.float32
    rgb = ImageTarget(IMAGE_H, IMAGE_W, 3)
    same = random_pixels(IMAGE_H, IMAGE_W).astype("float32")
    assert fit_pixels(same, rgb, "x") is not None and np.array_equal(
        fit_pixels(same, rgb, "x"), same
    )
    assert fit_pixels(random_pixels(IMAGE_H, IMAGE_W, 1)[:, :, 0], rgb, "x").shape == (
        IMAGE_H,
        IMAGE_W,
        3,
    )
    with pytest.raises(ClientError, match="finite"):
        fit_pixels(np.full((IMAGE_H, IMAGE_W, 3), np.nan), rgb, "x")
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    huge = encode_image(np.zeros((side, side), dtype=np.uint8))  # compresses to a few kB
    with pytest.raises(ClientError, match="too large"):
        decode_image(huge, rgb, "x")


def test_scalar_rows_and_binary_numeric_tensors() -> None:
    sig = sig_for({}, (1,))
    assert parse_v1_predict({"instances": [1, 2, 3]}, sig).batch.shape == (3, 1)
    dense = sig_for(dense_metadata(), (FEATURES,))
    x = rows(2)
    raw = x.astype("<f8").tobytes()
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, FEATURES],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    req = parse_v2_infer(body, dense, raw)
    np.testing.assert_allclose(req.batch, x)
    assert req.batch.dtype == np.float32
    with pytest.raises(ClientError, match="binary"):
        parse_v2_infer(body, dense, None)
    bytes_body = {
        "inputs": [
            {
                "name": "input",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 6},
            }
        ]
    }
    img = sig_for(image_metadata(), (IMAGE_H, IMAGE_W, 3), (3,))
    with pytest.raises(ClientError, match="truncated"):
        parse_v2_infer(bytes_body, img, struct.pack("<I", 10) + b"ab")


def test_onnx_runs_on_cuda_first_and_always_keeps_the_cpu() -> None:
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers(cpu_only) == ["CPUExecutionProvider"]
    assert execution_providers(gpu_build) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # What the session really uses decides the line: a CUDA build on a machine without a GPU
    # falls back to the CPU, and says why.
    assert device_note(gpu_build[1:], gpu_build[1:]) == ", on the GPU"
    assert device_note(gpu_build[1:], cpu_only[1:]) == (
        ", on the CPU: this ONNX Runtime has CUDA but sees no GPU"
    )
    assert device_note(cpu_only[1:], cpu_only[1:]) == ", on the CPU"


def test_engines_agree_and_onnx_file_is_used_when_present(tmp_path) -> None:
    model = dense_model(seed=5)
    model.predict(rows(1), verbose=0)
    write_version(tmp_path, DENSE, model, dense_metadata())
    vdir = tmp_path / DENSE / "1"
    x = rows(7, seed=3)
    expected = model.predict(x, verbose=0)
    keras_engine = load_engine("keras", vdir)
    onnx_engine = load_engine("onnx", vdir)
    # The engine line says where it runs: this (CPU) ONNX Runtime has no CUDA provider.
    assert onnx_engine.detail.startswith("converted") and onnx_engine.detail.endswith(
        ", on the CPU"
    )
    assert keras_engine.input_shape == onnx_engine.input_shape == (FEATURES,)
    np.testing.assert_allclose(keras_engine.predict(x), expected, atol=1e-5)
    np.testing.assert_allclose(onnx_engine.predict(x), expected, atol=1e-5)
    # A trainer may ship model.onnx: then it is loaded as is (no TensorFlow needed).
    model.export(str(vdir / "model.onnx"), format="onnx", verbose=False)
    shipped = load_engine("auto", vdir)
    assert shipped.name == "onnx" and "version directory" in shipped.detail
    np.testing.assert_allclose(shipped.predict(x), expected, atol=1e-5)
    # ... in a process that never imports TensorFlow or Keras.
    code = (
        "import sys; from kerasop_server.engines import load_engine;"
        f" e = load_engine('auto', {str(vdir)!r});"
        " assert e.name == 'onnx', e.name;"
        " heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules];"
        " assert not heavy, heavy; print(e.predict(__import__('numpy').zeros((1, 784), 'float32')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ValueError):
        load_engine("tpu", vdir)
    (vdir / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(EngineError):
        load_engine("onnx", vdir)
    assert load_engine("auto", vdir).name == "keras"  # auto falls back
