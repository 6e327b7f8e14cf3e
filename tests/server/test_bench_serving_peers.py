"""Smoke run of bench/serving_peers.py: tiny sizes, no thresholds.

This project's server and the naive Keras server (the peers need their own
venvs, see bench/setup_peers.sh) on the dense model, every HTTP protocol (the
grpc cells need ghz, built by bench/build_ghz.sh from its Go module), two
concurrencies: every answer is checked against ONNX Runtime by the script,
and every cell must have been measured without errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.bench import load

REPO = Path(__file__).resolve().parents[2]


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _settled(pids: dict[str, int], want: dict[str, str]) -> dict[str, str]:
    """The processes' states once they match ``want`` (a signal lands within
    milliseconds), or as they are after 2 s."""
    for _ in range(40):
        states = {name: _state(pid) for name, pid in pids.items()}
        if states == want:
            break
        time.sleep(0.05)
    return states


def test_servers_not_measured_are_paused_with_their_children(tmp_path) -> None:
    bench = load("serving_peers")
    # Each "server" is a shell with a child, as MLServer has workers.
    servers = [bench.Server(name, ["sh", "-c", "sleep 60 & wait"], 0, "m") for name in "abc"]
    for server in servers:
        server.start(tmp_path)
    try:
        pids = {}
        for server in servers:
            children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
            for _ in range(100):
                if children.read_text().split():
                    break
                time.sleep(0.05)
            pids[server.name] = server.proc.pid
            pids[server.name + "-child"] = int(children.read_text().split()[0])
        running = dict.fromkeys(pids, "S")
        with bench.alone(servers, servers[1]):
            paused = {name: "S" if name.startswith("b") else "T" for name in pids}
            assert _settled(pids, paused) == paused
        assert _settled(pids, running) == running
        with bench.alone(servers, None):
            assert _settled(pids, dict.fromkeys(pids, "T")) == dict.fromkeys(pids, "T")
    finally:
        for server in servers:
            server.stop()  # resumes a paused server first, or SIGTERM would wait
    assert all(s.proc.returncode is not None for s in servers)


def test_serving_peers_quick_run(tmp_path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "KERASOP_CACHE": str(tmp_path / "cache")}
    argv = [
        sys.executable, str(REPO / "bench" / "serving_peers.py"), "--quick", "--models", "dense",
        "--servers", "kerasop,naive", "--protocols", "v2-json,v2-binary,v1",
        "--concurrency", "1,4", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "this server against the best peer" in done.stdout
    result = json.loads((out / "serving_peers_quick.json").read_text())
    (model,) = result["models"]
    assert model["support"]["kerasop"] == {
        "v2-json": "ok", "v2-binary": "ok", "v1": "ok", "floor": "ok"
    }  # fmt: skip
    assert model["support"]["naive"]["v2-json"] == "ok" and model["support"]["naive"]["v1"] == "ok"
    cells = {(c["server"], c["protocol"], c["concurrency"]): c for c in model["cells"]}
    for protocol in ("v2-json", "v2-binary", "v1", "floor"):  # floor: GET of /v2/health/ready
        for concurrency in (1, 4):
            cell = cells[("kerasop", protocol, concurrency)]
            assert cell["requests"] > 0 and cell["errors"] == 0, cell
            assert cell["p50_ms"] <= cell["p99_ms"]
            assert cell["cpu_s_per_1000"] > 0
    assert cells[("naive", "v1", 1)]["requests"] > 0
    assert cells[("ceiling", "-", 4)]["rps"] > 0
    assert len(cells[("kerasop", "v1", 4)]["rounds"]) == 1  # per-round figures kept
    assert result["meta"]["loadgen"]
    servers = result["meta"]["servers"]
    assert servers["kerasop"]["versions"]["onnxruntime"] not in ("", "-")
    assert "no per-request log" in servers["kerasop"]["config"]


@pytest.mark.ghz
def test_serving_peers_quick_grpc(tmp_path) -> None:
    """The grpc cells: ghz (bench/build_ghz.sh, cached by version) against this server's
    OIP v2 gRPC, the answer checked against ONNX Runtime by the script first."""
    build = subprocess.run(
        ["bash", str(REPO / "bench" / "build_ghz.sh")],
        capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    ghz_dir = str(Path(build.stdout.strip().splitlines()[-1]).parent)
    out = tmp_path / "results"
    env = {
        **os.environ,
        "KERASOP_CACHE": str(tmp_path / "cache"),  # the model here; ghz from PATH
        "PATH": ghz_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    argv = [
        sys.executable, str(REPO / "bench" / "serving_peers.py"), "--quick", "--models", "dense",
        "--servers", "kerasop", "--protocols", "grpc", "--concurrency", "1,4", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "serving_peers_quick.json").read_text())
    (model,) = result["models"]
    assert model["support"]["kerasop"]["grpc"] == "ok"
    cells = {(c["server"], c["protocol"], c["concurrency"]): c for c in model["cells"]}
    for concurrency in (1, 4):
        cell = cells[("kerasop", "grpc", concurrency)]
        assert cell["requests"] > 0 and cell["errors"] == 0, cell
        assert cell["p50_ms"] <= cell["p99_ms"]
    assert result["meta"]["grpc_loadgen"].startswith("ghz ")
