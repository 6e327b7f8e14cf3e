"""Compare a served model with the same model loaded locally (run in a runtime-image pod).

    python /scripts/predict_check.py --host SVC --model NAME --model-dir /models/NAME/V \
        --csv /data/dense/train.csv --rows 5

Prints one JSON object: local predictions (keras.saving.load_model of model.keras),
the TF Serving v1 predictions (row and columnar form), the Open Inference v2 outputs,
the model status/metadata answers and the largest differences.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from httpkit import (
    call,
    csv_rows,
    server_parser,
    v1_body,
    v1_values,
    v2_body,
    v2_values,
    wait_ready,
)


def main() -> int:
    p = server_parser()
    p.add_argument("--csv", required=True)
    p.add_argument("--rows", type=int, default=5)
    # a model with the user's own classes: their module, as the trainer imported it
    p.add_argument("--code-path", help="folder added to sys.path before loading the model")
    p.add_argument("--import", dest="imports", action="append", default=[])
    args = p.parse_args()

    rows = csv_rows(args.csv, args.rows)
    wait_ready(args.host, args.port, args.model)
    out: dict = {"rows": len(rows), "features": len(rows[0])}

    s, v1 = call(args.host, args.port, "POST", f"/v1/models/{args.model}:predict", v1_body(rows))
    out["v1_status"] = s
    out["v1"] = v1_values(v1) if s == 200 else v1
    cols = {"inputs": rows}
    s, v1c = call(args.host, args.port, "POST", f"/v1/models/{args.model}:predict", cols)
    out["v1_columnar_status"] = s
    out["v1_columnar"] = (
        [float(v) for r in v1c["outputs"] for v in (r if isinstance(r, list) else [r])]
        if s == 200
        else v1c
    )
    s, v2 = call(args.host, args.port, "POST", f"/v2/models/{args.model}/infer", v2_body(rows))
    out["v2_status"] = s
    out["v2"] = v2_values(v2) if s == 200 else v2
    out["v2_model_version"] = v2.get("model_version") if isinstance(v2, dict) else None
    out["v2_output_shape"] = v2["outputs"][0]["shape"] if s == 200 else None
    out["v1_model_status"] = call(args.host, args.port, "GET", f"/v1/models/{args.model}")
    out["v1_metadata_status"] = call(
        args.host, args.port, "GET", f"/v1/models/{args.model}/metadata"
    )[0]
    out["v2_ready_status"] = call(args.host, args.port, "GET", "/v2/health/ready")[0]
    out["v2_model_ready_status"] = call(
        args.host, args.port, "GET", f"/v2/models/{args.model}/ready"
    )[0]
    s, bad = call(
        args.host,
        args.port,
        "POST",
        f"/v1/models/{args.model}:predict",
        {"instances": [[1.0, 2.0]]},
    )
    out["bad_input"] = [s, bad]

    import importlib

    import keras
    import numpy as np

    if args.code_path:
        sys.path.insert(0, args.code_path)
    for module in args.imports:
        importlib.import_module(module)
    model = keras.saving.load_model(os.path.join(args.model_dir, "model.keras"))
    local = model.predict(np.asarray(rows, dtype="float32"), verbose=0)
    out["local"] = [float(v) for v in np.ravel(local)]
    with open(os.path.join(args.model_dir, "metadata.json")) as fh:
        out["metadata"] = json.load(fh)

    def diff(other):
        if not isinstance(other, list) or len(other) != len(out["local"]):
            return None
        return max(abs(a - b) for a, b in zip(other, out["local"], strict=False))

    out["max_diff_v1"] = diff(out["v1"])
    out["max_diff_v1_columnar"] = diff(out["v1_columnar"])
    out["max_diff_v2"] = diff(out["v2"])
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
