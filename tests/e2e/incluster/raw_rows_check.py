"""Raw rows (numbers and strings) to a served table model with categorical columns,
compared with the same model.keras loaded here (run in a runtime-image pod).

    python /scripts/raw_rows_check.py --host churn --model churn \
        --model-dir /models/churn/1 --csv /data/mixed/train.csv --rows 4

Sends the CSV's rows, columns in metadata.json ``input.columns`` order, strings as
strings: TF Serving v1 ``instances`` and Open Inference v2 (one tensor per column,
``BYTES`` for the categorical ones). Prints one JSON object with the answers and the
largest differences from local ``model.predict``.
"""

from __future__ import annotations

import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from httpkit import call, server_parser, v1_values, v2_values, wait_ready


def main() -> int:
    p = server_parser()
    p.add_argument("--csv", required=True)
    p.add_argument("--rows", type=int, default=4)
    args = p.parse_args()

    with open(os.path.join(args.model_dir, "metadata.json")) as fh:
        meta = json.load(fh)["input"]
    columns = meta["columns"]
    categorical = {c["column"]: c["input"] for c in meta["categorical"]}
    with open(args.csv, newline="") as fh:
        table = list(csv.DictReader(fh))[: args.rows]
    rows = [
        [r[c] if c in categorical else float(r[c]) for c in columns] for r in table
    ]  # the raw row: strings stay strings
    wait_ready(args.host, args.port, args.model)
    out: dict = {"rows": rows, "columns": columns}

    s, v1 = call(
        args.host, args.port, "POST", f"/v1/models/{args.model}:predict", {"instances": rows}
    )
    out["v1_status"], out["v1"] = s, (v1_values(v1) if s == 200 else v1)
    v2_inputs = [
        {
            "name": c,
            "shape": [len(rows)],
            "datatype": "BYTES" if c in categorical else "FP32",
            "data": [r[i] for r in rows],
        }
        for i, c in enumerate(columns)
    ]
    s, v2 = call(
        args.host, args.port, "POST", f"/v2/models/{args.model}/infer", {"inputs": v2_inputs}
    )
    out["v2_status"], out["v2"] = s, (v2_values(v2) if s == 200 else v2)
    out["v2_metadata"] = call(args.host, args.port, "GET", f"/v2/models/{args.model}")[1]

    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.saving.load_model(os.path.join(args.model_dir, "model.keras"))
    numeric = [i for i, c in enumerate(columns) if c not in categorical]
    features = {"features": np.array([[r[i] for i in numeric] for r in rows], dtype="float32")}
    for i, c in enumerate(columns):
        if c in categorical:
            features[categorical[c]] = tf.constant([[r[i]] for r in rows])
    local = model.predict(features, verbose=0)
    out["local"] = [float(v) for v in np.ravel(local)]

    def diff(other):
        if not isinstance(other, list) or len(other) != len(out["local"]):
            return None
        return max(abs(a - b) for a, b in zip(other, out["local"], strict=True))

    out["max_diff_v1"] = diff(out["v1"])
    out["max_diff_v2"] = diff(out["v2"])
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
