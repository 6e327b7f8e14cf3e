"""Hot swap: a new version written while clients keep sending requests.

The swap must not fail a single request, over REST or gRPC; answers switch from
version 1's outputs to version 2's, and (per client) never go back.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from pathlib import Path

import grpc
import httpx
import keras
import pytest
import tritonclient.grpc
import tritonclient.grpc.aio as grpc_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverkit import (
    DENSE,
    FEATURES,
    dense_metadata,
    dense_model,
    free_port,
    metric_samples,
    rows,
    running_server,
    write_version,
)
from tritonclient.utils import InferenceServerException

X = rows(1, seed=51)


def expected_output(model: keras.Model) -> float:
    return float(model.predict(X, verbose=0)[0, 0])


async def client_loop(url: str, worker: int, stop: asyncio.Event, log: list) -> None:
    """Alternate v1 and v2 requests until ``stop``; log (worker, t, status, value, version)."""
    v1 = {"instances": X.tolist()}
    v2 = {
        "inputs": [
            {"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": X[0].tolist()}
        ]
    }
    async with httpx.AsyncClient(timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 2:
                    r = await client.post(f"{url}/v1/models/{DENSE}:predict", json=v1)
                    value = r.json()["predictions"][0][0] if r.status_code == 200 else None
                    version = None
                else:
                    r = await client.post(f"{url}/v2/models/{DENSE}/infer", json=v2)
                    ok = r.status_code == 200
                    value = r.json()["outputs"][0]["data"][0] if ok else None
                    version = int(r.json()["model_version"]) if ok else None
                log.append((worker, time.monotonic(), r.status_code, value, version))
            except httpx.HTTPError as exc:  # a dropped connection is a failed request
                log.append((worker, time.monotonic(), repr(exc), None, None))


async def grpc_client_loop(target: str, worker: int, stop: asyncio.Event, log: list) -> None:
    """OIP v2 over gRPC (tritonclient's asyncio client) until ``stop``; logs as client_loop."""
    tensor = grpc_aio.InferInput("input", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(X)
    client = grpc_aio.InferenceServerClient(target)
    try:
        while not stop.is_set():
            try:
                result = await client.infer(DENSE, [tensor])
                value = float(result.as_numpy("output")[0, 0])
                version = int(result.get_response().model_version)
                log.append((worker, time.monotonic(), 200, value, version))
            except InferenceServerException as exc:
                log.append((worker, time.monotonic(), exc.status(), None, None))
    finally:
        await client.close()


def classify(value: float | None, out1: float, out2: float) -> int:
    if value is not None and abs(value - out1) < 1e-5:
        return 1
    if value is not None and abs(value - out2) < 1e-5:
        return 2
    return 0


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_new_version_swapped_in_under_load_without_failures(tmp_path: Path, protocol: str) -> None:
    m1, m2 = dense_model(seed=1), dense_model(seed=1, bias=3.0)
    out1, out2 = expected_output(m1), expected_output(m2)
    assert abs(out1 - out2) > 0.05
    write_version(tmp_path, DENSE, m1, dense_metadata())

    with running_server(
        tmp_path, DENSE, poll_seconds=0.1, batch_timeout_ms=2, grpc_port=free_port()
    ) as server:
        log: list = []

        async def scenario() -> None:
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(
                    client_loop(server.url, w, stop, log)
                    if protocol == "rest"
                    else grpc_client_loop(server.grpc_target, w, stop, log)
                )
                for w in range(6)
            ]
            await asyncio.sleep(0.5)
            # Publish version 2 (export + rename) while the clients run.
            await asyncio.to_thread(write_version, tmp_path, DENSE, m2, dense_metadata())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(e[4] == 2 for e in log):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # keep going on the new version for a while
            stop.set()
            await asyncio.gather(*workers)

        asyncio.run(scenario())

        failures = [e for e in log if e[2] != 200]
        assert not failures, failures[:5]
        kinds = [classify(e[3], out1, out2) for e in log]
        assert 0 not in kinds, "an answer matched neither version"
        assert kinds.count(1) > 10 and kinds.count(2) > 10, (kinds.count(1), kinds.count(2))
        for e, kind in zip(log, kinds, strict=True):  # OIP answers name the version that answered
            if e[4] is not None:
                assert e[4] == kind
        for w in range(6):  # per client, once on version 2, never back on version 1
            seq = [k for e, k in zip(log, kinds, strict=True) if e[0] == w]
            assert seq == sorted(seq), f"worker {w} went back to version 1"

        status = httpx.get(f"{server.url}/v1/models/{DENSE}").json()
        assert status["model_version_status"][0]["version"] == "2"
        text = httpx.get(f"{server.url}/metrics").text
        assert metric_samples(text, "kerasop_server_model_version") == {(("model", DENSE),): 2.0}
        loads = metric_samples(text, "kerasop_server_model_loads_total")
        assert loads[(("model", DENSE), ("result", "ok"))] == 2.0
        # The old version is unloaded once its requests are done.
        deadline = time.monotonic() + 10
        while server.manager._retiring and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.manager._retiring


def test_broken_version_is_skipped_and_pinned_server_stays(tmp_path: Path) -> None:
    m1, m3 = dense_model(seed=1), dense_model(seed=1, bias=-3.0)
    write_version(tmp_path, DENSE, m1, dense_metadata())
    with running_server(tmp_path, DENSE, poll_seconds=0.1) as server:
        # Version 2 is broken (a corrupt model.keras): serving goes on with version 1.
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "model.keras").write_bytes(b"not a zip file")
        shutil.copy(tmp_path / DENSE / "1" / "metadata.json", broken / "metadata.json")
        broken.rename(tmp_path / DENSE / "2")
        deadline = time.monotonic() + 30
        while server.manager.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "version 2" in (server.manager.last_error or "")
        r = httpx.post(f"{server.url}/v1/models/{DENSE}:predict", json={"instances": X.tolist()})
        assert r.status_code == 200
        assert abs(r.json()["predictions"][0][0] - expected_output(m1)) < 1e-5
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        # Version 3 is fine: it is picked up.
        write_version(tmp_path, DENSE, m3, dense_metadata())
        deadline = time.monotonic() + 60
        while server.manager.current.version != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.post(
            f"{server.url}/v1/models/{DENSE}/versions/3:predict", json={"instances": X.tolist()}
        )
        assert r.status_code == 200
        assert abs(r.json()["predictions"][0][0] - expected_output(m3)) < 1e-5
        text = httpx.get(f"{server.url}/metrics").text
        assert (
            metric_samples(text, "kerasop_server_model_loads_total")[
                (("model", DENSE), ("result", "error"))
            ]
            >= 1
        )

    # Pinned to version 1: newer versions exist but are not served.
    with running_server(tmp_path, DENSE, version=1, poll_seconds=0.1) as pinned:
        # the store watch ends once the pinned version is loaded: nothing can move it after
        deadline = time.monotonic() + 30
        while not pinned.manager._watch_task.done():
            assert time.monotonic() < deadline, "still watching the store"
            time.sleep(0.05)
        assert pinned.manager.current.version == 1
        r = httpx.post(f"{pinned.url}/v1/models/{DENSE}:predict", json={"instances": X.tolist()})
        assert abs(r.json()["predictions"][0][0] - expected_output(m1)) < 1e-5
        r = httpx.post(
            f"{pinned.url}/v1/models/{DENSE}/versions/3:predict", json={"instances": X.tolist()}
        )
        assert r.status_code == 404
        meta = httpx.get(f"{pinned.url}/v2/models/{DENSE}").json()
        assert meta["versions"] == ["1"]


def test_not_ready_until_a_version_exists(tmp_path: Path) -> None:
    from kerasop_server.config import ServerConfig
    from kerasop_server.runner import BackgroundServer

    config = ServerConfig(
        store_root=tmp_path,
        model=DENSE,
        host="127.0.0.1",
        port=0,
        poll_seconds=0.1,
        grpc_port=free_port(),
    )
    server = BackgroundServer(config).start(wait_ready=False)
    try:
        url = server.url
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        r = httpx.get(f"{url}/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert httpx.get(f"{url}/v2/models/{DENSE}/ready").status_code == 503
        r = httpx.post(f"{url}/v1/models/{DENSE}:predict", json={"instances": X.tolist()})
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        assert httpx.get(f"{url}/v1/models/{DENSE}").status_code == 503
        # gRPC: live, not ready, and an inference is UNAVAILABLE with REST's reason
        grpc_client = tritonclient.grpc.InferenceServerClient(server.grpc_target)
        assert grpc_client.is_server_live() and not grpc_client.is_server_ready()
        assert not grpc_client.is_model_ready(DENSE)
        tensor = tritonclient.grpc.InferInput("input", [1, FEATURES], "FP32")
        tensor.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException) as refused:
            grpc_client.infer(DENSE, [tensor])
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert refused.value.message() == r.json()["error"]
        # The standard gRPC health service (Kubernetes' grpc probe) says the same
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING, service
        write_version(tmp_path, DENSE, dense_model(), dense_metadata())
        server.wait_ready(60)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        assert grpc_client.is_server_ready() and grpc_client.is_model_ready(DENSE)
        deadline = time.monotonic() + 5  # the health service follows readiness every 0.25 s
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != serving:
            assert time.monotonic() < deadline, "gRPC health still NOT_SERVING"
            time.sleep(0.1)
        answer = health.Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=5
        )
        assert answer.status == serving
    finally:
        server.stop()


def test_loaded_version_is_kept_out_of_full_collections(tmp_path: Path) -> None:
    """Once a version is loaded, what the process holds is frozen (``gc.freeze``): the
    collector's full passes, which walked all of it every few seconds under load, see only
    what came later. Frozen objects are not listed by ``gc.get_objects()``."""
    write_version(tmp_path, DENSE, dense_model(), dense_metadata())
    gc.unfreeze()
    before_load = [object()]  # a tracked container, alive before the server starts
    try:
        with running_server(tmp_path, DENSE):
            assert gc.get_freeze_count() > 0
            assert not any(o is before_load for o in gc.get_objects())
    finally:
        gc.unfreeze()
