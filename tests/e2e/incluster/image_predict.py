"""b64 image predictions from an image model, with both protocols (runtime-image pod).

    python /scripts/image_predict.py --host SVC --model NAME --model-dir /models/NAME/V \
        --image /data/images/images/a.png --image /data/images/images/b.png

Prints one JSON object with the v1 and v2 answers (and the status codes) and the same
images predicted locally: decoded the way the trainer reads them (tf.io), not by the
server's decoder, and run through model.keras from the version directory.
"""

from __future__ import annotations

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from httpkit import call, server_parser, wait_ready


def local_predictions(model_dir: str, images: list[str]) -> list[float]:
    import keras
    import numpy as np
    import tensorflow as tf

    with open(os.path.join(model_dir, "metadata.json")) as fh:
        shape = json.load(fh)["input"]["image"]
    batch = []
    for path in images:
        pixels = tf.io.decode_image(
            tf.io.read_file(path), channels=shape["channels"], expand_animations=False
        )
        pixels = tf.image.resize(
            tf.cast(pixels, tf.float32),
            [shape["height"], shape["width"]],
            method="bilinear",
            antialias=True,
        )
        batch.append(pixels.numpy())
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    return [float(v) for v in np.ravel(model.predict(np.stack(batch), verbose=0))]


def main() -> int:
    p = server_parser()
    p.add_argument("--image", action="append", required=True)
    args = p.parse_args()
    encoded = []
    for path in args.image:
        with open(path, "rb") as fh:
            encoded.append(base64.b64encode(fh.read()).decode())
    wait_ready(args.host, args.port, args.model)
    out: dict = {}
    s, v1 = call(
        args.host,
        args.port,
        "POST",
        f"/v1/models/{args.model}:predict",
        {"instances": [{"b64": b} for b in encoded]},
    )
    out["v1_status"], out["v1"] = s, v1
    body = {
        "inputs": [{"name": "input", "shape": [len(encoded)], "datatype": "BYTES", "data": encoded}]
    }
    s, v2 = call(args.host, args.port, "POST", f"/v2/models/{args.model}/infer", body)
    out["v2_status"], out["v2"] = s, v2
    out["v1_metadata"] = call(args.host, args.port, "GET", f"/v1/models/{args.model}/metadata")
    out["local"] = local_predictions(args.model_dir, args.image)
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
