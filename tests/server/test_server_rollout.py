"""Two versions in one server (rollout file): exact weighted split, per-version metrics,
explicit version routes, shadow agreement, promote and rollback without a restart.

Everything over real HTTP; version 3 is a canary whose model fails on some inputs
(its engine raises for rows whose first feature is above 0.5); version 5's model
holds every call while the test keeps ``HOLD_V5`` clear (a shadow that cannot keep up).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
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

from kerasop.server_metrics import parse_server_metrics
from kerasop.status import VersionCounters
from kerasop_server.config import ServerConfig
from kerasop_server.engines import load_engine
from kerasop_server.routing import SHADOW_QUEUE_SIZE
from kerasop_server.runner import BackgroundServer

M1, M2 = dense_model(seed=1), dense_model(seed=1, bias=3.0)
MODEL_THREADS: defaultdict[str, list[str]] = defaultdict(list)  # version -> thread of each call
HOLD_V5 = threading.Event()
HOLD_V5.set()


def failing_engine(kind: str, version_dir, *, threads: int = 0):
    """The real engine, recording the thread of each call; version 3's fails on rows
    whose first feature is > 0.5, version 5's waits while HOLD_V5 is clear."""
    engine = load_engine(kind, version_dir, threads=threads)
    version, real = Path(version_dir).name, engine.predict

    def predict(batch: np.ndarray) -> np.ndarray:
        MODEL_THREADS[version].append(threading.current_thread().name)
        if version == "3" and (batch[:, 0] > 0.5).any():
            raise ValueError("version 3 cannot take feature 0 above 0.5")
        if version == "5":
            HOLD_V5.wait(timeout=60)
        return real(batch)

    engine.predict = predict  # type: ignore[method-assign]
    return engine


def narrow_model():
    """A version trained on 10 features: requests of the 784-feature model do not fit it."""
    import keras

    keras.utils.set_random_seed(4)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation="sigmoid")])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store-rollout")
    for model in (M1, M2, M1):
        meta = dense_metadata()
        meta["lineage"] = {"job": "rollout-test", "specHash": "0" * 16}
        write_version(root, DENSE, model, meta)
    narrow = dense_metadata()
    narrow["input"] = {"kind": "tabular", "shape": [10], "dtype": "float32"}
    write_version(root, DENSE, narrow_model(), narrow)  # version 4
    write_version(root, DENSE, M1, dense_metadata())  # version 5 (held while HOLD_V5 is clear)
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory):
    plan_file = tmp_path_factory.mktemp("plan") / "rollout.json"
    plan_file.write_text(json.dumps({"stable": 1}))
    with running_server(
        store,
        DENSE,
        poll_seconds=0.1,
        rollout_file=plan_file,
        engine_factory=failing_engine,
        grpc_port=free_port(),
    ) as srv:
        srv.plan_file = plan_file
        yield srv


def set_plan(server, **plan) -> None:
    """Write the plan (atomically, like a ConfigMap volume) and wait until it is applied."""
    tmp = server.plan_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan))
    tmp.replace(server.plan_file)
    manager = server.manager
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        loaded = (
            manager.current is not None
            and manager.current.version == plan["stable"]
            and (
                (manager.candidate.version if manager.candidate else None) == plan.get("candidate")
            )
        )
        if (
            loaded
            and manager.split.weight == plan.get("weight", 0)
            and manager.shadowing == bool(plan.get("shadow"))
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"plan {plan} not applied: {manager.plan}, {manager.last_error}")


def v2_infer(client: httpx.Client, x: np.ndarray, version: int | None = None) -> httpx.Response:
    path = f"/v2/models/{DENSE}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }
    return client.post(path, json=body)


def counters(server) -> defaultdict[int, VersionCounters]:
    """Per-version counters, read with the operator's parser (the contract between the two)."""
    parsed = parse_server_metrics([httpx.get(f"{server.url}/metrics").text])
    return defaultdict(VersionCounters, parsed)


def test_weighted_split_is_exact_and_counted_per_version(server):
    set_plan(server, stable=1, candidate=2, weight=10)
    before = counters(server)
    x = rows(1, seed=3)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answered = [int(v2_infer(client, x).json()["model_version"]) for _ in range(200)]
    assert answered.count(2) == 20 and answered.count(1) == 180
    assert answered[:10].count(2) == 1  # spread evenly, not in a burst
    after = counters(server)
    assert after[1].requests - before[1].requests == 180
    assert after[2].requests - before[2].requests == 20
    assert after[2].errors == 0 and after[2].p99_ms() is not None
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_samples(text, "kerasop_server_rollout_weight") == {(("model", DENSE),): 10.0}


def test_explicit_version_routes_reach_either_version(server):
    set_plan(server, stable=1, candidate=2, weight=0)
    x = rows(1, seed=4)
    want1, want2 = (float(m.predict(x, verbose=0)[0, 0]) for m in (M1, M2))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post(f"/v1/models/{DENSE}/versions/2:predict", json={"instances": x.tolist()})
        assert r.status_code == 200 and abs(r.json()["predictions"][0][0] - want2) < 1e-5
        r = v2_infer(client, x, version=1)
        assert r.json()["model_version"] == "1"
        assert abs(r.json()["outputs"][0]["data"][0] - want1) < 1e-5
        meta = client.get(f"/v1/models/{DENSE}/versions/2/metadata").json()
        assert meta["model_spec"]["version"] == "2"
        assert meta["kerasop"]["metadata"]["lineage"]["job"] == "rollout-test"
        status = client.get(f"/v1/models/{DENSE}/versions/2").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        assert client.get(f"/v2/models/{DENSE}/versions/2/ready").json()["ready"] is True
        missing = client.post(
            f"/v1/models/{DENSE}/versions/3:predict", json={"instances": x.tolist()}
        )
        assert missing.status_code == 404 and "serving version 1 and 2" in missing.json()["error"]
        # weight 0: every unversioned request goes to stable
        assert {v2_infer(client, x).json()["model_version"] for _ in range(20)} == {"1"}


def test_a_request_is_announced_to_the_batcher_of_the_version_that_answers(server):
    """The split is decided when a request arrives, so only the answering version's
    batcher waits for its body (the other one must not hold a batch open for it)."""
    set_plan(server, stable=1, candidate=2, weight=100)
    stable, candidate = server.manager.current.batcher, server.manager.candidate.batcher
    x = rows(1, seed=9)
    body = json.dumps({"instances": x.tolist()}).encode()
    seen: list[tuple[int, int]] = []

    def slow_body():
        yield body[:100]
        time.sleep(0.3)  # the server is reading the body now
        seen.append((stable._arriving, candidate._arriving))
        yield body[100:]

    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post(f"/v1/models/{DENSE}:predict", content=slow_body())
    assert r.status_code == 200
    assert abs(r.json()["predictions"][0][0] - float(M2.predict(x, verbose=0)[0, 0])) < 1e-5
    assert seen == [(0, 1)]
    set_plan(server, stable=1)


def test_shadow_compares_off_the_live_path(server):
    set_plan(server, stable=1, candidate=2, shadow=True)
    before = counters(server)[2]
    calls_before = len(MODEL_THREADS["2"])
    xs = rows(60, seed=5)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answered = [v2_infer(client, xs[i : i + 1]).json()["model_version"] for i in range(60)]
    assert set(answered) == {"1"}  # shadow answers are never returned
    expected = int(np.sum((M1.predict(xs, verbose=0) > 0.5) == (M2.predict(xs, verbose=0) > 0.5)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = counters(server)[2]
        if now.shadow_compared - before.shadow_compared >= 60:
            break
        time.sleep(0.05)
    compared = now.shadow_compared - before.shadow_compared
    agreed = now.shadow_agreed - before.shadow_agreed
    assert compared == 60 and agreed == expected
    assert 0 < expected < 60  # the two versions disagree on some rows: a real comparison
    # the shadow's model calls ran on the candidate's inference thread, never on the event loop
    shadow_threads = MODEL_THREADS["2"][calls_before:]
    assert shadow_threads and all(t.startswith("infer-v2") for t in shadow_threads)


def test_grpc_requests_take_the_same_split_and_shadow(server):
    """gRPC calls go through the same router: the exact split, per-version counters and
    shadow copies as REST's."""
    set_plan(server, stable=1, candidate=2, weight=10)
    before = counters(server)
    tensor = tgrpc.InferInput("input", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(rows(1, seed=13))
    client = tgrpc.InferenceServerClient(server.grpc_target)

    def infer() -> str:
        return client.infer(DENSE, [tensor]).get_response().model_version

    answered = [infer() for _ in range(100)]
    assert answered.count("2") == 10 and answered.count("1") == 90
    after = counters(server)
    assert after[2].requests - before[2].requests == 10
    assert after[1].requests - before[1].requests == 90

    set_plan(server, stable=1, candidate=2, shadow=True)
    before_shadow = counters(server)[2].shadow_compared
    assert {infer() for _ in range(30)} == {"1"}
    deadline = time.monotonic() + 30
    while counters(server)[2].shadow_compared - before_shadow < 30:
        assert time.monotonic() < deadline, "the shadow did not compare the gRPC requests"
        time.sleep(0.05)
    set_plan(server, stable=1)


def test_a_shadow_that_cannot_keep_up_drops_copies_and_never_delays_live_answers(server):
    set_plan(server, stable=1, candidate=5, shadow=True)

    def shadow_results() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics").text
        samples = metric_samples(text, "kerasop_server_shadow_comparisons_total")
        return {dict(k)["result"]: v for k, v in samples.items() if dict(k)["version"] == "5"}

    before = shadow_results()
    x, sent = rows(1, seed=10), 200
    HOLD_V5.clear()  # the candidate's model now takes no call until released
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answered = [v2_infer(client, x) for _ in range(sent)]
        assert [r.status_code for r in answered] == [200] * sent  # stable answered every one
        assert {r.json()["model_version"] for r in answered} == {"1"}
        held = shadow_results()
        dropped = held.get("dropped", 0) - before.get("dropped", 0)
        # at most one call's worth of copies is held by the model, the queue holds the rest
        assert sent - SHADOW_QUEUE_SIZE - server.config.max_batch_size <= dropped
        assert dropped <= sent - SHADOW_QUEUE_SIZE
    finally:
        HOLD_V5.set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = shadow_results()
        done = sum(after.get(k, 0) - before.get(k, 0) for k in ("agree", "disagree", "dropped"))
        if done >= sent:
            break
        time.sleep(0.05)
    assert done == sent and after.get("disagree", 0) == before.get("disagree", 0)
    set_plan(server, stable=1)


def test_failing_canary_errors_are_its_own_and_rollback_unloads_it(server):
    set_plan(server, stable=1, candidate=3, weight=50)
    before = counters(server)
    xs = rows(40, seed=6)
    statuses: dict[str, list[int]] = {"1": [], "3": []}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(40):
            r = v2_infer(client, xs[i : i + 1])
            version = r.json().get("model_version") if r.status_code == 200 else "3"
            statuses[version].append(r.status_code)
    after = counters(server)
    assert set(statuses["1"]) == {200} and len(statuses["1"]) == 20  # stable: no errors
    failed = sum(1 for s in statuses["3"] if s == 500)
    assert failed > 0
    assert after[3].errors - before[3].errors == failed
    assert after[1].errors == before[1].errors
    # rollback: all traffic to stable, the canary unloaded
    set_plan(server, stable=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = v2_infer(client, xs[:1], version=3)
        assert r.status_code == 404


def test_requests_a_candidate_cannot_take_count_as_its_errors(server):
    set_plan(server, stable=1, candidate=4, weight=50)
    before = counters(server)
    x = rows(1, seed=8)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        codes = [v2_infer(client, x).status_code for _ in range(20)]
    assert codes.count(200) == 10 and codes.count(400) == 10
    after = counters(server)
    assert after[4].errors - before[4].errors == 10 and after[4].error_rate() > 0
    assert after[1].errors == before[1].errors
    set_plan(server, stable=1)


def test_a_plan_without_stable_serves_nothing(store, tmp_path):
    plan_file = tmp_path / "rollout.json"
    plan_file.write_text(json.dumps({"stable": None}))
    config = ServerConfig(
        store_root=store,
        model=DENSE,
        host="127.0.0.1",
        port=0,
        poll_seconds=0.1,
        rollout_file=plan_file,
    )
    srv = BackgroundServer(config).start(wait_ready=False)
    try:
        time.sleep(1.0)
        r = httpx.get(f"{srv.url}/v2/health/ready")
        assert r.status_code == 503 and "has passed the rollout yet" in r.json()["error"]
        plan_file.write_text(json.dumps({"stable": 2}))
        srv.wait_ready(timeout=60)
        assert srv.manager.current.version == 2
    finally:
        srv.stop()


def test_promote_switches_without_reload_and_bad_plan_keeps_serving(server):
    set_plan(server, stable=1, candidate=2, weight=50)
    candidate = server.manager.candidate
    set_plan(server, stable=2)
    assert server.manager.current is candidate  # the warm candidate became stable
    x = rows(1, seed=7)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert {v2_infer(client, x).json()["model_version"] for _ in range(10)} == {"2"}
        server.plan_file.write_text("{not json")
        time.sleep(0.5)
        assert v2_infer(client, x).json()["model_version"] == "2"
        server.plan_file.write_text(json.dumps({"stable": 2, "weight": 101}))
        time.sleep(0.5)
        assert v2_infer(client, x).status_code == 200
    set_plan(server, stable=1)  # going back is allowed when the plan says so
    assert x.shape[1] == FEATURES
