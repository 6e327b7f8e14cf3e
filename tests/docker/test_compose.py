"""The built images, for real: docker-compose.yml trains and serves the article's model.

Builds the images with scripts/images.sh (cached: seconds when nothing changed, about
ten minutes on a bare machine), brings up `data -> train -> serve` under a throw-away
compose project on a free loopback port, sends predictions with both protocols, and
tears everything down with its volumes (`down -v`), also when a test fails. Then the same
with the `s3` profile: `s3 -> bucket -> train-s3 -> serve-s3`, the versions in a bucket of
a local SeaweedFS (cluster/seaweedfs-image.sh), the server serving its verified mirror.

Needs root (or a docker group member), Debian's docker.io and a compose implementation
(`docker compose` v2 or Debian's `docker-compose` v1); scripts/start-dockerd.sh starts
the engine if none answers. Nothing is skipped: a missing piece is a failure that says
what to install.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RUNTIME_IMAGE = f"kerasop-runtime:{VERSION}"
OPERATOR_IMAGE = f"kerasop-operator:{VERSION}"
MODEL = "dense-classifier"


def run(*args: str, timeout: float = 1800, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, text=True, capture_output=True, timeout=timeout, **kw)


def check(*args: str, timeout: float = 1800, **kw: Any) -> str:
    proc = run(*args, timeout=timeout, **kw)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if present, else Debian's `docker-compose` (v1)."""
    if run("docker", "compose", "version", timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no compose implementation: apt-get install docker-compose (Debian's v1 works)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def images() -> dict[str, float]:
    """Both images, built (or found up to date) by the project's script; seconds taken."""
    check(str(REPO / "scripts" / "start-dockerd.sh"), timeout=120)
    t0 = time.monotonic()
    check(str(REPO / "scripts" / "images.sh"), "build", "runtime", "operator", timeout=2400)
    return {"build_s": round(time.monotonic() - t0, 1)}


class Stack:
    """The running stack; ``compose(...)`` runs in the throw-away project's environment.
    ``store`` is where its models live: ``volume`` (train, serve) or ``s3`` (the profile's
    train-s3, serve-s3)."""

    def __init__(self, compose: list[str], env: dict[str, str], url: str, store: str) -> None:
        self._compose, self.env, self.url, self.store = compose, env, url, store
        suffix = "-s3" if store == "s3" else ""
        self.train, self.serve = f"train{suffix}", f"serve{suffix}"
        self.timings: dict[str, float] = {}

    def compose(self, *args: str, timeout: float = 900) -> str:
        return check(*self._compose, *args, timeout=timeout, env=self.env, cwd=REPO)

    def compose_quiet(self, *args: str, timeout: float = 300) -> str:
        """Like ``compose`` but never fails: for teardown."""
        proc = run(*self._compose, *args, timeout=timeout, env=self.env, cwd=REPO)
        return proc.stdout + proc.stderr

    def container(self, service: str) -> dict[str, Any]:
        cid = self.compose("ps", "-q", service).split()
        assert cid, f"no container for service {service}"
        return json.loads(check("docker", "inspect", cid[0]))[0]

    def rows(self, n: int) -> tuple[list[list[float]], list[int]]:
        """The first ``n`` rows of the CSV the data step wrote into the data volume."""
        out = self.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "head", "data",
                           "-n", str(n + 1), "/data/dense/train.csv")  # fmt: skip
        lines = [line for line in out.splitlines() if line and line[0].isdigit()]
        assert len(lines) == n, out[-2000:]
        table = [[float(v) for v in line.split(",")] for line in lines]
        return [row[:-1] for row in table], [int(row[-1]) for row in table]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = http("GET", f"{self.url}/v2/health/ready", timeout=5)
                if status == 200 and body.get("ready"):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                logs = self.compose_quiet("logs", "--no-color", "--tail=50", self.serve)
                pytest.fail(f"server not ready after {timeout} s:\n{logs}")
            time.sleep(1)


@pytest.fixture(scope="module", params=["volume", "s3"])
def stack(request: pytest.FixtureRequest, images: dict[str, float]) -> Iterator[Stack]:
    store = request.param
    project = f"kerasoptest{os.getpid()}{store}"
    port = free_port()
    env = dict(os.environ, KERASOP_VERSION=VERSION, KERASOP_HTTP_PORT=str(port),
               KERASOP_S3_HTTP_PORT=str(port), KERASOP_HTTP_ADDR="127.0.0.1",
               COMPOSE_PROJECT_NAME=project)  # fmt: skip
    if store == "s3":
        check("bash", str(REPO / "cluster" / "seaweedfs-image.sh"), "--docker", timeout=1200)
        env.update(COMPOSE_PROFILES="s3", KERASOP_S3_ACCESS_KEY="AK" + secrets.token_hex(8),
                   KERASOP_S3_SECRET_KEY=secrets.token_urlsafe(24))  # fmt: skip
    compose = [*compose_command(), "-f", str(REPO / "docker-compose.yml"), "-p", project]
    s = Stack(compose, env, f"http://127.0.0.1:{port}", store)
    s.timings.update(images)
    try:
        t0 = time.monotonic()
        # `up serve` starts data, then train, then serve (each waits for the previous
        # one to exit 0; serve-s3 also waits for s3 and bucket); compose v1 and v2 both
        # return once the server has been started.
        s.compose("up", "-d", s.serve)
        s.timings["up_s"] = round(time.monotonic() - t0, 1)
        s.wait_ready(timeout=180)
        s.timings["up_to_ready_s"] = round(time.monotonic() - t0, 1)
        yield s
    finally:
        print(s.compose_quiet("logs", "--no-color", "--tail=40")[-6000:])
        t0 = time.monotonic()
        print(s.compose_quiet("down", "-v", "--remove-orphans"))
        s.timings["down_s"] = round(time.monotonic() - t0, 1)
        print(f"docker compose timings (s), {store}: {s.timings}")


def test_data_and_training_steps_succeeded(stack: Stack) -> None:
    steps = ("data", "bucket", stack.train) if stack.store == "s3" else ("data", stack.train)
    for service in steps:
        state = stack.container(service)["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 0, (service, state)
    events = [json.loads(line.split("|", 1)[-1])
              for line in stack.compose("logs", "--no-color", stack.train).splitlines()
              if '"kerasop":' in line]  # fmt: skip
    done = [e for e in events if e["kerasop"] == "done"]
    assert done, events
    # a fresh project (its own volumes): the first version
    assert (done[-1]["modelName"], done[-1]["modelVersion"]) == (MODEL, 1)
    assert done[-1]["epochsRun"] == 5
    assert done[-1]["metrics"]["accuracy"] >= 0.8
    if stack.store == "s3":
        assert done[-1]["modelPath"] == f"s3://kerasop/models/{MODEL}/1"
        served = stack.compose("logs", "--no-color", stack.serve)
        assert f"downloaded version 1 of {MODEL} from s3://kerasop/models" in served, served
        # the keys reach the containers as env, never their logs
        logs = stack.compose("logs", "--no-color")
        assert stack.env["KERASOP_S3_SECRET_KEY"] not in logs


def test_services_run_unprivileged_on_a_read_only_root(stack: Stack) -> None:
    services = [stack.train, stack.serve] + (["s3"] if stack.store == "s3" else [])
    for service in services:
        info = stack.container(service)
        assert info["Config"]["User"] == "1000:1000", service
        assert info["HostConfig"]["ReadonlyRootfs"] is True, service
        assert info["HostConfig"]["CapDrop"] == ["ALL"], service
    # the image's health check passes (it runs every 5 s once the server is up)
    deadline = time.monotonic() + 60
    while (health := stack.container(stack.serve)["State"]["Health"]["Status"]) != "healthy":
        assert health == "starting" and time.monotonic() < deadline, health
        time.sleep(1)


def test_v1_predict_matches_labels(stack: Stack) -> None:
    x, y = stack.rows(40)
    status, meta = http("GET", f"{stack.url}/v1/models/{MODEL}")
    assert status == 200
    assert meta["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = http("POST", f"{stack.url}/v1/models/{MODEL}:predict", {"instances": x})
    assert status == 200, body
    probs = [p[0] if isinstance(p, list) else p for p in body["predictions"]]
    assert len(probs) == len(x) and all(0.0 <= p <= 1.0 for p in probs)
    accuracy = sum((p >= 0.5) == bool(label) for p, label in zip(probs, y, strict=True)) / len(y)
    assert accuracy >= 0.8, (accuracy, probs, y)

    status, body = http(
        "POST", f"{stack.url}/v1/models/{MODEL}:predict", {"instances": [[1.0, 2.0]]}
    )
    assert 400 <= status < 500 and "error" in body, (status, body)


def test_v2_infer_matches_v1(stack: Stack) -> None:
    x, _ = stack.rows(5)
    status, model = http("GET", f"{stack.url}/v2/models/{MODEL}")
    assert status == 200
    name = model["inputs"][0]["name"]
    request = {"inputs": [{"name": name, "shape": [len(x), len(x[0])], "datatype": "FP32",
                           "data": [v for row in x for v in row]}]}  # fmt: skip
    status, body = http("POST", f"{stack.url}/v2/models/{MODEL}/infer", request)
    assert status == 200, body
    out = body["outputs"][0]
    assert out["shape"] == [len(x), 1]
    _, v1 = http("POST", f"{stack.url}/v1/models/{MODEL}:predict", {"instances": x})
    v1_probs = [p[0] if isinstance(p, list) else p for p in v1["predictions"]]
    assert out["data"] == pytest.approx(v1_probs, abs=1e-5)
    status, _ = http("GET", f"{stack.url}/v2/models/{MODEL}/ready")
    assert status == 200


def test_operator_image_has_no_tensorflow(images: dict[str, float]) -> None:
    proc = run("docker", "run", "--rm", OPERATOR_IMAGE, "python", "-c", "import tensorflow",
               timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "No module named 'tensorflow'" in proc.stderr, proc.stderr
    check("docker", "run", "--rm", "--read-only", OPERATOR_IMAGE, "python", "-c",
          "import kopf, kerasop_operator", timeout=120)  # fmt: skip
    assert check("docker", "run", "--rm", "--entrypoint", "id", OPERATOR_IMAGE, "-u",
                 timeout=60).strip() == "1000"  # fmt: skip
