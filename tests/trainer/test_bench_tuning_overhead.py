"""Smoke run of bench/tuning_overhead.py: tiny sizes, no thresholds.

keras-tuner in one process, `kerasop train -f` on the search, and the search as 2 processes
(the chief runs trials too): each must finish and report a wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tuning_overhead_quick_run(tmp_path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable,
        str(REPO / "bench" / "tuning_overhead.py"),
        "--quick",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "x keras-tuner" in done.stdout
    result = json.loads((out / "tuning_overhead_quick.json").read_text())
    assert set(result["wall_s"]) == {"keras-tuner", "kerasop", "2 processes"}
    assert all(wall > 0 for wall in result["wall_s"].values()), result
