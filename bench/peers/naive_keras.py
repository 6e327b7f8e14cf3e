"""The server a user writes in ten minutes: aiohttp around ``model.predict``.

    python naive_keras.py MODEL_NAME model.keras PORT

One ``model.predict`` per request on the event loop (no batching, no thread
pool), v1 and v2 JSON. The baseline every serving stack is measured against.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from aiohttp import web


def main() -> None:
    name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.saving.load_model(path, compile=False)

    async def v1_predict(request: web.Request) -> web.Response:
        body = await request.json()
        out = model.predict(np.asarray(body["instances"], dtype=np.float32), verbose=0)
        return web.json_response({"predictions": out.tolist()})

    async def v2_infer(request: web.Request) -> web.Response:
        tensor = (await request.json())["inputs"][0]
        batch = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        out = model.predict(batch, verbose=0)
        output = {"name": "output", "shape": list(out.shape), "datatype": "FP32"}
        return web.json_response(
            {"model_name": name, "outputs": [{**output, "data": out.ravel().tolist()}]}
        )

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(f"/v1/models/{name}:predict", v1_predict)
    app.router.add_post(f"/v2/models/{name}/infer", v2_infer)
    app.router.add_get(f"/v2/models/{name}/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
