"""One b64 image prediction from an image model, with both protocols (runtime-image pod).

    python /scripts/image_predict.py --host SVC --model NAME --image /data/images/images/x.png

Prints one JSON object with the v1 and v2 answers (and the status codes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from httpkit import call, wait_ready  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    args = p.parse_args()
    with open(args.image, "rb") as fh:
        b64 = base64.b64encode(fh.read()).decode()
    wait_ready(args.host, args.port, args.model)
    out: dict = {}
    s, v1 = call(args.host, args.port, "POST", f"/v1/models/{args.model}:predict",
                 {"instances": [{"b64": b64}]})
    out["v1_status"], out["v1"] = s, v1
    body = {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    s, v2 = call(args.host, args.port, "POST", f"/v2/models/{args.model}/infer", body)
    out["v2_status"], out["v2"] = s, v2
    out["v1_metadata"] = call(args.host, args.port, "GET", f"/v1/models/{args.model}/metadata")
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
