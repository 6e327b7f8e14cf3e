"""The README's commands as a user runs them: the installed ``kerasop`` entry point in a
subprocess, real training on generated data, a real model server called over HTTP."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.support.kube import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dense-classifier.yaml"
KERASOP = Path(sys.executable).with_name("kerasop")  # this venv's console script
MODEL = "dense-classifier"


def kerasop(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    assert KERASOP.exists(), f"{KERASOP}: install the package (make setup)"
    return subprocess.run(
        [str(KERASOP), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def first_rows(path: Path, n: int) -> np.ndarray:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return np.array([[float(v) for k, v in r.items() if k != "label"] for r in rows], "float32")


def local_predictions(store: Path, version: int, x: np.ndarray) -> np.ndarray:
    path = store / MODEL / str(version) / "model.keras"
    return keras.saving.load_model(path, compile=False).predict(x, verbose=0)


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/v2/health/live", timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One ``kerasop demo`` run (it generates the data the other tests reuse)."""
    work = tmp_path_factory.mktemp("demo")
    port = free_port()
    result = kerasop(
        "demo", "--data-dir", str(work / "data"), "--store", str(work / "models"),
        "--port", str(port), cwd=work,
    )  # fmt: skip
    yield {"result": result, "work": work, "url": f"http://127.0.0.1:{port}"}


def printed_json(lines: list[str]) -> dict:
    """The prediction's JSON, printed before the readable per-row lines."""
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def test_demo_trains_serves_and_prints_predictions(demo) -> None:
    result, work = demo["result"], demo["work"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == [
        f"{e}/5" for e in range(1, 6)
    ]
    assert any(line.startswith(f"saved {MODEL} version 1 at ") for line in lines), lines
    assert f"serving at {demo['url']}" in lines
    answer = printed_json(lines)
    assert lines[-1].startswith("row 3: 1 (probability "), lines[-4:]  # then one line per row
    x = first_rows(work / "data" / "dense" / "train.csv", 3)
    np.testing.assert_allclose(
        answer["predictions"], local_predictions(work / "models", 1, x), atol=1e-5
    )
    assert refused(demo["url"]), "the demo's server is still running"


def test_train_serve_predict_as_in_the_quick_start(demo, tmp_path) -> None:
    data = demo["work"] / "data"
    store = tmp_path / "models"
    trained = kerasop("train", "-f", str(EXAMPLE), "--data-dir", str(data), "--store", str(store),
                      cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    lines = trained.stdout.splitlines()
    assert lines[0] == "training: 5 epochs"
    assert any(line.startswith(f"saved {MODEL} version 1 at ") for line in lines), lines
    metadata = json.loads((store / MODEL / "1" / "metadata.json").read_text())
    assert metadata["epochsRun"] == 5 and metadata["input"]["shape"] == [784]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(KERASOP), "serve", "-f", str(EXAMPLE), "--store", str(store), "--port", str(port),
         "--grpc-port", str(free_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready(url):  # listening comes first, then the model loads
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "kerasop serve not ready after 120 s"
            time.sleep(0.2)
        predicted = kerasop(
            "predict", "-f", str(EXAMPLE), "--csv", str(data / "dense" / "train.csv"),
            "--rows", "4", "--url", url, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr
        x = first_rows(data / "dense" / "train.csv", 4)
        np.testing.assert_allclose(
            printed_json(predicted.stdout.splitlines())["predictions"],
            local_predictions(store, 1, x),
            atol=1e-5,
        )
        # a bad request: one clear line and a non-zero exit; the server stays up
        bad = kerasop("predict", "-f", str(EXAMPLE), "--instances", "[[1, 2]]", "--url", url,
                      cwd=tmp_path, timeout=120)  # fmt: skip
        assert bad.returncode != 0 and "HTTP 400" in bad.stderr, bad.stderr
        assert server.poll() is None
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
