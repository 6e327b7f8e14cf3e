"""Smoke run of bench/training_throughput.py: tiny sizes, no thresholds.

Both runners (``kerasop train`` and the plain script) train the dense model on a tiny
CSV in separate processes; every run must report a wall time, a peak RSS and the
epoch lines the fit rate is read from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_training_throughput_quick_run(tmp_path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable, str(REPO / "bench" / "training_throughput.py"), "--quick",
        "--cases", "csv", "--growth", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "kerasop against the script" in done.stdout
    result = json.loads((out / "training_throughput_quick.json").read_text())
    (case,) = result["cases"]
    assert case["case"] == "csv" and case["size"] == 200
    for runner in ("kerasop", "script"):
        (run,) = case["runs"][runner]
        assert run["wall_s"] > 0 and run["peak_rss_mb"] > 100, run
        assert len(run["epoch_at_s"]) == 2, run  # --quick trains 2 epochs
        assert run["fit_samples_per_s"] > 0
        assert 0 < run["after_last_epoch_s"] < run["wall_s"] - run["epoch_at_s"][0], run
