"""``kerasop-serve``: argument parsing, env fallbacks, and a real subprocess."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from serverkit import DENSE, free_port, rows

from kerasop.spec import ServerSpec
from kerasop_server.main import parse_args


def test_defaults_follow_the_server_spec(monkeypatch) -> None:
    for name in (
        "KERASOP_STORE_ROOT",
        "KERASOP_MODEL",
        "KERASOP_MODEL_VERSION",
        "KERASOP_PORT",
        "KERASOP_ENGINE",
    ):
        monkeypatch.delenv(name, raising=False)
    config, _ = parse_args(["--model", "m"])
    spec = ServerSpec()
    assert config.store_root == Path("/models")
    assert (config.host, config.port, config.version) == ("0.0.0.0", 8080, None)
    assert config.max_batch_size == spec.max_batch_size
    assert config.batch_timeout_ms == spec.batch_timeout_ms
    assert config.max_request_bytes == spec.max_request_bytes
    assert config.grpc_port == spec.grpc_port == 8081  # gRPC on unless --grpc-port 0
    assert config.poll_seconds == 2.0
    assert config.engine == "auto"


def test_flags_and_env_fallbacks(monkeypatch) -> None:
    monkeypatch.setenv("KERASOP_STORE_ROOT", "/store")
    monkeypatch.setenv("KERASOP_MODEL", "envmodel")
    monkeypatch.setenv("KERASOP_MODEL_VERSION", "4")
    monkeypatch.setenv("KERASOP_PORT", "9000")
    monkeypatch.setenv("KERASOP_GRPC_PORT", "0")
    config, _ = parse_args([])
    assert (str(config.store_root), config.model, config.version, config.port) == (
        "/store",
        "envmodel",
        4,
        9000,
    )
    assert config.grpc_port == 0
    assert parse_args(["--grpc-port", "9001"])[0].grpc_port == 9001  # the flag wins
    argv = [
        "--store-root",
        "/s",
        "--model",
        "m",
        "--version",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        "81",
        "--max-batch-size",
        "8",
        "--batch-timeout-ms",
        "0.5",
        "--max-request-bytes",
        "2048",
        "--poll-seconds",
        "0.5",
        "--engine",
        "keras",
        "--threads",
        "1",
    ]
    config, _ = parse_args(argv)
    assert (config.model, config.version, config.port, config.max_batch_size) == ("m", 2, 81, 8)
    assert (config.batch_timeout_ms, config.max_request_bytes, config.poll_seconds) == (
        0.5,
        2048,
        0.5,
    )
    assert (config.engine, config.threads) == ("keras", 1)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "m", "--max-batch-size", "0"],
        ["--model", "m", "--engine", "tpu"],
        ["--model", "m", "--batch-timeout-ms", "-1"],
        ["--model", "m", "--version", "0"],
    ],
)
def test_bad_arguments_exit_2(monkeypatch, argv) -> None:
    monkeypatch.delenv("KERASOP_MODEL", raising=False)
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


@contextlib.contextmanager
def server_process(store: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``kerasop-serve`` as a subprocess on free ports (HTTP's in the url, gRPC's in
    ``proc.grpc_port``), ready; killed if still running."""
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "KERASOP_MODEL": DENSE, "KERASOP_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasop_server.main", "--store-root", str(store),
         "--host", "127.0.0.1", "--grpc-port", str(grpc_port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    proc.grpc_port = grpc_port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready in 120 s"
            time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kerasop_serve_subprocess_serves_and_stops_on_sigterm(dense_store, dense_local) -> None:
    with server_process(dense_store, "--version", "1") as (proc, url):
        x = rows(2, seed=61)
        r = httpx.post(f"{url}/v1/models/{DENSE}:predict", json={"instances": x.tolist()})
        assert r.status_code == 200
        np.testing.assert_allclose(
            r.json()["predictions"], dense_local.predict(x, verbose=0), atol=1e-5
        )
        # OIP v2 over gRPC on its own port, in the same process
        tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{proc.grpc_port}")
        answer = grpc_client.infer(DENSE, [tensor]).as_numpy("output")
        np.testing.assert_array_equal(answer, np.float32(r.json()["predictions"]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read().decode()
        assert "serving model dense-classifier version 1" in output


def refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/v2/health/live", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        pass
    return False


def test_sigterm_lets_the_request_in_flight_finish(dense_store, dense_local) -> None:
    """A pod being stopped answers what it already accepted (the rest of draining, the
    preStop hook that keeps it in the endpoints meanwhile, is the operator's)."""
    hold = 4.0  # the batch window: a request waits for it while another is still arriving
    x = rows(1, seed=62)
    body = json.dumps({"instances": x.tolist()}).encode()

    def slow_body():  # a second client, still sending while the first one waits
        yield body[: len(body) // 2]
        time.sleep(hold + 2)
        yield body[len(body) // 2 :]

    def post(content):
        return httpx.post(
            f"{url}/v1/models/{DENSE}:predict",
            content=content,
            headers={"content-type": "application/json"},
            timeout=60,
        )

    def grpc_infer(port: int) -> np.ndarray:
        tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
        return client.infer(DENSE, [tensor], client_timeout=60).as_numpy("output")

    with server_process(dense_store, "--batch-timeout-ms", str(hold * 1000)) as (proc, url):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            arriving = pool.submit(post, slow_body())
            time.sleep(0.5)
            started = time.monotonic()
            answer = pool.submit(post, body)
            grpc_answer = pool.submit(grpc_infer, proc.grpc_port)  # in the same batch window
            time.sleep(1.0)  # held by the batch window (checked below: it took > 1 s)
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not refused(url):  # the server stops accepting...
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            assert not answer.done(), "the request was answered before the shutdown began"
            r = answer.result()  # ... and still answers the requests it holds
            grpc_out = grpc_answer.result()
            with contextlib.suppress(httpx.HTTPError):  # the half-sent one may be cut off
                arriving.result()
        assert time.monotonic() - started >= 1.0
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(grpc_out, np.float32(r.json()["predictions"]))
        np.testing.assert_allclose(
            r.json()["predictions"], dense_local.predict(x, verbose=0), atol=1e-5
        )
        assert proc.wait(timeout=60) == 0


def test_server_cli_checks_the_store_uri(capsys):
    from kerasop_server.main import parse_args
    from kerasop_server.mirror import mirror_root

    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--store-uri", "az://bucket/models"])
    assert "a model store is s3://bucket" in capsys.readouterr().err
    gcs, _ = parse_args(["--model", "m", "--store-uri", "gs://bucket/models"])
    assert gcs.store_uri == "gs://bucket/models"
    config, _ = parse_args(
        [
            "--model",
            "m",
            "--store-uri",
            "s3://bucket/models",
            "--store-options",
            '{"endpoint": "http://seaweedfs:8333", "pathStyle": true}',
            "--store-cache",
            "/var/cache/kerasop",
        ]
    )
    assert config.store_options is not None and config.store_options.path_style
    assert config.store_root == mirror_root(Path("/var/cache/kerasop"), "s3://bucket/models")
