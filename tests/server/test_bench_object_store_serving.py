"""Smoke run of bench/object_store_serving.py: the dense model, 1 repeat, no thresholds.

The trainer trains it, a real S3 server (SeaweedFS) holds the bucket, and a new server serves
it from a model store folder and from the bucket: both must answer a prediction, the bucket's
server only after its download, and both downloads must copy the version's bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.component  # SeaweedFS's weed (cluster/build-seaweedfs.sh)

REPO = Path(__file__).resolve().parents[2]


def test_object_store_serving_quick_run(tmp_path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, str(REPO / "bench" / "object_store_serving.py"), "--quick",
            "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "-> first prediction" in done.stdout and "verified / plain" in done.stdout
    result = json.loads((out / "object_store_serving_quick.json").read_text())
    (model,) = result["models"]
    assert model["model"] == "dense"
    assert {"model.keras", "metadata.json"} <= set(model["files"])  # as the trainer publishes
    for mode in ("volume", "object-store"):
        (run,) = model["serving"][mode]["runs"]
        assert 0 < run["load_started_s"] < run["ready_s"] <= run["serving_s"], run
        assert run["engine"]
    (bucket_run,) = model["serving"]["object-store"]["runs"]
    # log-line times in ms: the download ends before the load starts, possibly in the same ms
    assert bucket_run["downloaded_s"] <= bucket_run["load_started_s"]
    download = model["download"]
    assert download["bytes"] == model["bytes"]
    for how in ("plain", "verified"):
        assert len(download[how]["seconds"]) == 1 and download[how]["mb_per_s_median"] > 0
    assert download["ratio"] > 0
