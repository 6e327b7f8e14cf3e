"""Image models: b64 PNG/JPEG (v1), BYTES (v2), raw pixel arrays, resizing."""

from __future__ import annotations

import io
import json
import struct

import httpx
import numpy as np
from PIL import Image
from serverkit import IMAGE_C, IMAGE_H, IMAGE_W, IMAGES, b64, encode_image, random_pixels

ATOL = 1e-5


def predict_v1(server, body):
    r = httpx.post(f"{server.url}/v1/models/{IMAGES}:predict", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json()["predictions"])


def local(model, pixels) -> np.ndarray:
    return model.predict(np.asarray(pixels, dtype="float32"), verbose=0)


def pil_reference(data: bytes) -> np.ndarray:
    """What the server should feed the model: PIL decode, RGB, bilinear resize."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if im.size != (IMAGE_W, IMAGE_H):
            im = im.resize((IMAGE_W, IMAGE_H), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype="float32")


def test_metadata_shows_image_input(image_server) -> None:
    meta = httpx.get(f"{image_server.url}/v2/models/{IMAGES}").json()
    assert meta["inputs"][0]["shape"] == [-1, IMAGE_H, IMAGE_W, IMAGE_C]
    assert meta["outputs"][0]["shape"] == [-1, 3]


def test_b64_png_at_model_size(image_server, image_local) -> None:
    pixels = [random_pixels(IMAGE_H, IMAGE_W, seed=s) for s in (1, 2)]
    body = {"instances": [{"b64": b64(encode_image(p))} for p in pixels]}
    np.testing.assert_allclose(
        predict_v1(image_server, body), local(image_local, pixels), atol=ATOL
    )


def test_b64_images_are_resized_and_converted(image_server, image_local) -> None:
    big_rgb = encode_image(random_pixels(57, 31, seed=3))
    gray = encode_image(random_pixels(IMAGE_H, IMAGE_W, 1, seed=4)[:, :, 0])
    rgba = encode_image(random_pixels(30, 30, 4, seed=5))
    jpeg = encode_image(random_pixels(40, 48, seed=6), "JPEG", quality=90)
    images = [big_rgb, gray, rgba, jpeg]
    expected = local(image_local, [pil_reference(d) for d in images])
    # Named input, plain b64 objects, and the columnar format all decode the same way.
    for body in (
        {"instances": [{"b64": b64(d)} for d in images]},
        {"instances": [{"input": {"b64": b64(d)}} for d in images]},
        {"inputs": [{"b64": b64(d)} for d in images]},
    ):
        r = httpx.post(f"{image_server.url}/v1/models/{IMAGES}:predict", json=body)
        assert r.status_code == 200, r.text
        got = np.array(r.json().get("predictions", r.json().get("outputs")))
        np.testing.assert_allclose(got, expected, atol=ATOL)


def test_raw_pixel_arrays(image_server, image_local) -> None:
    pixels = [random_pixels(IMAGE_H, IMAGE_W, seed=s) for s in (7, 8, 9)]
    body = {"instances": [p.tolist() for p in pixels]}
    np.testing.assert_allclose(
        predict_v1(image_server, body), local(image_local, pixels), atol=ATOL
    )
    # A pixel array of another size is resized like a decoded image.
    other = random_pixels(10, 12, seed=10)
    expected = local(image_local, [pil_reference(encode_image(other))])
    got = predict_v1(image_server, {"instances": [other.tolist()]})
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_v2_bytes_and_fp32_pixels(image_server, image_local) -> None:
    pixels = [random_pixels(IMAGE_H, IMAGE_W, seed=s) for s in (11, 12)]
    expected = local(image_local, pixels)
    url = f"{image_server.url}/v2/models/{IMAGES}/infer"
    bodies = [
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2],
                    "datatype": "BYTES",
                    "data": [b64(encode_image(p)) for p in pixels],
                }
            ]
        },
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, IMAGE_H, IMAGE_W, IMAGE_C],
                    "datatype": "FP32",
                    "data": np.stack(pixels).ravel().tolist(),
                }
            ]
        },
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, IMAGE_H, IMAGE_W, IMAGE_C],
                    "datatype": "UINT8",
                    "data": np.stack(pixels).tolist(),
                }
            ]
        },
    ]
    for body in bodies:
        r = httpx.post(url, json=body)
        assert r.status_code == 200, r.text
        tensor = r.json()["outputs"][0]
        assert tensor["shape"] == [2, 3]
        np.testing.assert_allclose(np.array(tensor["data"]).reshape(2, 3), expected, atol=ATOL)


def test_v2_raw_bytes_with_binary_extension(image_server, image_local) -> None:
    images = [
        encode_image(random_pixels(25, 25, seed=13)),
        encode_image(random_pixels(8, 9, seed=14)),
    ]
    raw = b"".join(struct.pack("<I", len(d)) + d for d in images)
    header = json.dumps(
        {
            "id": "bin",
            "inputs": [
                {
                    "name": "input",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        }
    ).encode()
    r = httpx.post(
        f"{image_server.url}/v2/models/{IMAGES}/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "bin"
    got = np.array(r.json()["outputs"][0]["data"]).reshape(2, 3)
    expected = local(image_local, [pil_reference(d) for d in images])
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_grayscale_model_decodes_as_L(tmp_path) -> None:
    """channels=1: images are converted to L (one channel) before the model."""
    import keras
    from serverkit import image_metadata, image_model, running_server, write_version

    write_version(
        tmp_path, "gray", image_model(seed=3, channels=1), image_metadata("gray", channels=1)
    )
    model = keras.saving.load_model(tmp_path / "gray" / "1" / "model.keras", compile=False)
    rgb = encode_image(random_pixels(IMAGE_H, IMAGE_W, seed=15))
    with Image.open(io.BytesIO(rgb)) as im:
        reference = np.asarray(im.convert("L"), dtype="float32")[None, :, :, None]
    with running_server(tmp_path, "gray", engine="keras") as server:
        r = httpx.post(
            f"{server.url}/v1/models/gray:predict", json={"instances": [{"b64": b64(rgb)}]}
        )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        r.json()["predictions"], model.predict(reference, verbose=0), atol=ATOL
    )
