"""This project's server against the servers users would pick instead, in one run.

    python bench/serving_peers.py [--quick] [--models dense,cnn] [--concurrency 1,8,32,64]
                                  [--protocols v2-json,v2-binary,v1,grpc]
                                  [--servers kerasop,kserve,mlserver,mlserver-nobatch,...]
                                  [--duration 10] [--rounds 3] [--out bench/results]
                                  [--kerasop-args "--max-batch-size 8"]

Servers, all on 127.0.0.1, all running the same model with one inference thread, none
writing a line per request (access logs off: the table's header says so per server):
  kerasop           this project's server (``kerasop-serve --engine onnx --threads 1``,
                    defaults otherwise: batches of <= 32 rows; ``--kerasop-args`` adds
                    server options)
  kserve            KServe's ModelServer with a custom ``kserve.Model`` running the same
                    ``model.onnx`` with ONNX Runtime (bench/peers/kserve_onnx.py); no
                    batching: KServe's batcher is the agent sidecar's, v1 HTTP only
  mlserver          MLServer with a custom runtime running ``model.onnx`` with ONNX Runtime
                    (bench/peers/mlserver_onnx.py), adaptive batching on (max_batch_size
                    32, max_batch_time 2 ms), parallel_workers 1 (inference in one worker
                    process)
  mlserver-nobatch  the same, adaptive batching off (MLServer's defaults)
  mlserver-w0       the same, adaptive batching off, parallel_workers 0 (inference in the
                    main process, beside the HTTP and gRPC servers)
  naive             aiohttp around ``model.predict`` of ``model.keras``, one call per
                    request (bench/peers/naive_keras.py)
  ceiling           no server: ONNX Runtime in this process on batches of
                    min(concurrency, 32) rows; the most rows/s the engine gives here

KServe and MLServer run from their own venvs (bench/setup_peers.sh; their pins
conflict with each other and with this project; ONNX Runtime pinned to this
project's version in both). A peer whose venv is missing is left out with a note.
Each server's ONNX Runtime and package versions are in the results' ``meta.servers``
and in the table's header.

Models (random weights: speed does not depend on training):
  dense  784 -> Dense(10, relu) -> Dense(1, sigmoid)
  cnn    MobileNetV2 at 96x96x3 (weights=None, 1000 classes)
Requests carry one row each: v2 JSON (``data`` as a flat list), v2 with the
binary tensor data extension (tensor bytes after the JSON header, binary
output asked for), v1 ``{"instances": [row]}``, and ``grpc``: OIP v2's
``inference.GRPCInferenceService/ModelInfer`` with the row in ``raw_input_contents``.
Every server's answer is first checked against ONNX Runtime in this process; a
server that cannot answer a protocol (MLServer has no v1) is shown as n/a.

Load: wrk (closed loop, one connection per concurrent client, Lua script
bench/peers/post.lua) when installed, else a Python aiohttp client (slower: it
takes CPU from the servers; the output says which). gRPC: ghz (bench/build_ghz.sh;
closed loop, ``-c`` concurrent calls on one HTTP/2 connection, as a gRPC client's
channel does, GOMAXPROCS=1 like wrk's one thread); without it the grpc cells are left
out with a note. Cells run in interleaved rounds (every server at one protocol and
concurrency, then the next), so noise from the machine hits every server alike; the
table shows the median round, the JSON every round (``rounds``).
While one server is measured the others are paused (SIGSTOP to their process
groups), so their idle wake-ups take no CPU from it.
CPU seconds per 1000 requests count the server's whole process tree (the ceiling: its
thread's CPU per 1000 rows, which noise from other jobs on the machine does not inflate).

Results: a table on stdout, bench/results/serving_peers.json and .png
(``--quick``: serving_peers_quick.*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(__file__).resolve().parent / "peers"
HOST = "127.0.0.1"
CACHE = Path(os.environ.get("KERASOP_CACHE", Path.home() / ".cache" / "kerasop"))
VENVS = Path(os.environ.get("BENCH_VENV_ROOT", CACHE / "bench-venv"))
SERVERS = ("kerasop", "kserve", "mlserver", "mlserver-nobatch", "mlserver-w0", "naive")
# The venv (bench/setup_peers.sh) each peer runs from.
PEER_VENVS = {
    "kserve": "kserve",
    "mlserver": "mlserver",
    "mlserver-nobatch": "mlserver",
    "mlserver-w0": "mlserver",
}
# MLServer's configurations: adaptive batching on?, parallel_workers.
MLSERVER_CONFIGS = {
    "mlserver": (True, 1),
    "mlserver-nobatch": (False, 1),
    "mlserver-w0": (False, 0),
}
# Each server's configuration in words (the table's header and the results' meta).
CONFIGS = {
    "kerasop": "batching on (<= 32 rows, greedy: what is queued, no wait for a lone request); "
    "inference on one thread beside the event loop (uvloop), a lone request's call on the "
    "loop itself; no per-request log",
    "kserve": "no batching (KServe's batcher is the agent sidecar's, v1 HTTP only); 1 worker; "
    "uvicorn access log, latency logging and the gRPC 'grpc method' line off",
    "mlserver": "adaptive batching on (32 rows / 2 ms); parallel_workers 1 (inference in a "
    "worker process); debug off: no access log (REST or gRPC)",
    "mlserver-nobatch": "adaptive batching off (MLServer's default); parallel_workers 1; "
    "debug off: no access log (REST or gRPC)",
    "mlserver-w0": "adaptive batching off; parallel_workers 0 (inference in the main process); "
    "debug off: no access log (REST or gRPC)",
    "naive": "no batching; model.predict on the event loop; aiohttp access log off",
}
PROTOCOLS = ("v2-json", "v2-binary", "v1", "grpc")
GRPC = "grpc"
GRPC_CALL = "inference.GRPCInferenceService/ModelInfer"
PROTO = REPO / "server" / "kerasop_server" / "protocol" / "grpc_predict_v2.proto"
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_BATCH = 32
ATOL = 1e-3


# --------------------------------------------------------------------------
# Models: built once, cached as a model store (model.keras, model.onnx, metadata.json)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    name: str
    shape: tuple[int, ...]
    kind: str  # metadata input kind: tabular | image
    mobilenet_alpha: float = 1.0  # cnn only
    classes: int = 1000


MODELS = {
    "dense": ModelCase("dense", (784,), "tabular"),
    "cnn": ModelCase("cnn", (96, 96, 3), "image"),
}
QUICK_MODELS = {
    "dense": MODELS["dense"],
    "cnn": ModelCase("cnn-tiny", (32, 32, 3), "image", mobilenet_alpha=0.35, classes=10),
}


def build_keras(case: ModelCase) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    if case.kind == "tabular":
        return keras.Sequential(
            [
                keras.Input(case.shape),
                keras.layers.Dense(10, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
    return keras.applications.MobileNetV2(
        input_shape=case.shape, alpha=case.mobilenet_alpha, weights=None, classes=case.classes
    )


def model_store(case: ModelCase) -> Path:
    """A model store holding ``case`` as version 1 (built on the first run)."""
    root = CACHE / "bench-models" / case.name
    vdir = root / case.name / "1"
    if (vdir / "model.onnx").is_file():
        return root
    sys.path.insert(0, str(REPO / "server"))
    sys.path.insert(0, str(REPO))
    from kerasop.store import ModelStore
    from kerasop_server.engines import ONNX_FILE, convert_to_onnx

    print(f"building {case.name} (first run only) ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    model = build_keras(case)
    meta: dict[str, Any] = {
        "name": case.name,
        "input": {"kind": case.kind, "shape": list(case.shape), "dtype": "float32"},
        "output": {"shape": list(model.outputs[0].shape[1:])},
    }
    if case.kind == "image":
        h, w, c = case.shape
        meta["input"]["image"] = {"height": h, "width": w, "channels": c}
    with ModelStore(root).new_version(case.name) as pending:
        model.save(pending.path / "model.keras")
        (pending.path / ONNX_FILE).write_bytes(convert_to_onnx(model))
        (pending.path / "metadata.json").write_text(json.dumps(meta))
    return root


def ort_session(onnx_file: Path) -> Any:
    """One intra-op thread, no spinning: how every server here runs the graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


@dataclass
class Body:
    path: str  # URL path template with {model}
    data: bytes
    content_type: str = "application/json"
    header_length: int | None = None  # binary extension: length of the JSON part
    method: str = "POST"


# The floor: GET of this project's readiness endpoint (no body, no model), at the same
# concurrency as the cells. Its tail is the HTTP path and the machine alone: no server
# can have a better p99/p50 on this machine.
FLOOR = "floor"
FLOOR_BODY = Body("/v2/health/ready", b"", "", method="GET")


def grpc_messages() -> dict[str, Any]:
    """OIP v2's gRPC message classes, as this project's server builds them."""
    sys.path.insert(0, str(REPO / "server"))
    from kerasop_server.protocol.v2_grpc import MESSAGES

    return MESSAGES


def request_bodies(row: np.ndarray, model: str) -> dict[str, Body]:
    flat = row.ravel().tolist()
    shape = [1, *row.shape]
    tensor = {"name": "input", "shape": shape, "datatype": "FP32"}
    v2_json = json.dumps({"inputs": [{**tensor, "data": flat}]}).encode()
    raw = row.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    v1 = json.dumps({"instances": [row.tolist()]}).encode()
    grpc_request = grpc_messages()["ModelInferRequest"](
        model_name=model, inputs=[tensor], raw_input_contents=[raw]
    ).SerializeToString()
    infer = "/v2/models/{model}/infer"
    return {
        "v2-json": Body(infer, v2_json),
        "v2-binary": Body(infer, header + raw, "application/octet-stream", len(header)),
        "v1": Body("/v1/models/{model}:predict", v1),
        GRPC: Body(GRPC_CALL, grpc_request, "application/grpc"),
    }


def decode_answer(protocol: str, headers: Any, content: bytes) -> np.ndarray:
    if protocol == GRPC:
        response = grpc_messages()["ModelInferResponse"].FromString(content)
        tensor = response.outputs[0]
        if tensor.datatype != "FP32":
            raise ValueError(f"datatype {tensor.datatype}")
        if response.raw_output_contents:
            data = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        else:
            data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        return data.reshape(list(tensor.shape))
    if protocol == "v1":
        return np.asarray(json.loads(content)["predictions"], dtype=np.float32)
    length = headers.get(BINARY_HEADER)
    if length is not None:
        tensor = json.loads(content[: int(length)])["outputs"][0]
        return np.frombuffer(content[int(length) :], dtype="<f4").reshape(tensor["shape"])
    tensor = json.loads(content)["outputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def post(url: str, body: Body, timeout: float = 60) -> tuple[int, Any, bytes]:
    headers = {"Content-Type": body.content_type}
    if body.header_length is not None:
        headers[BINARY_HEADER] = str(body.header_length)
    req = urllib.request.Request(url, data=body.data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def grpc_infer(target: str, request: bytes, timeout: float = 60) -> bytes:
    """One ModelInfer call with a serialized request: the serialized answer."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        return bytes(channel.unary_unary("/" + GRPC_CALL)(request, timeout=timeout))


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    model: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    protocols: dict[str, str] = field(default_factory=dict)  # protocol -> "ok" or why not
    grpc_port: int | None = None  # OIP v2 over gRPC, when asked for

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def start(self, logdir: Path) -> None:
        self.log = logdir / f"{self.name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float, interval: float = 0.3) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log else ""
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                ready = f"{self.url}/v2/models/{self.model}/ready"
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(interval)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s (log: {self.log})")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's whole process group (its workers too)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()


def peer_python(peer: str) -> Path | None:
    python = VENVS / PEER_VENVS[peer] / "bin" / "python"
    return python if python.is_file() else None


def make_server(
    name: str, store: Path, case: ModelCase, workdir: Path, kerasop_args: list[str], grpc: bool
) -> Server:
    """``grpc``: open each server's OIP gRPC port (MLServer always has one)."""
    vdir = store / case.name / "1"
    port = free_port()
    grpc_port = free_port() if grpc or name in MLSERVER_CONFIGS else None
    if name == "kerasop":
        argv = [
            sys.executable, "-m", "kerasop_server.main", "--store-root", str(store),
            "--model", case.name, "--host", HOST, "--port", str(port), "--engine", "onnx",
            "--threads", "1", "--poll-seconds", "3600", "--log-level", "WARNING",
            "--grpc-port", str(grpc_port or 0), *kerasop_args,
        ]  # fmt: skip
        env = {"PYTHONPATH": os.pathsep.join([str(REPO / "server"), str(REPO)])}
        return Server(name, argv, port, case.name, env=env, grpc_port=grpc_port)
    if name == "naive":
        argv = [sys.executable, str(PEERS / "naive_keras.py"), case.name, str(vdir / "model.keras")]
        return Server(name, [*argv, str(port)], port, case.name)
    python = peer_python(name)
    assert python is not None
    if name == "kserve":
        argv = [str(python), str(PEERS / "kserve_onnx.py"), case.name, str(vdir / "model.onnx")]
        argv += [str(port), str(grpc_port or 0)]
        env = {"KSERVE_LOGLEVEL": "WARNING"}  # no "grpc method" line per gRPC call
        return Server(name, argv, port, case.name, env=env, grpc_port=grpc_port)
    # MLServer: a folder with its settings and the runtime module
    batching, workers = MLSERVER_CONFIGS[name]
    folder = workdir / f"{name}-{case.name}"
    folder.mkdir()
    shutil.copy(PEERS / "mlserver_onnx.py", folder)
    settings = {
        "debug": False,  # MLServer's uvicorn access log follows it
        "host": HOST,
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
        "parallel_workers": workers,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings: dict[str, Any] = {
        "name": case.name,
        "implementation": "mlserver_onnx.OnnxRuntime",
        "parameters": {"uri": str(vdir / "model.onnx")},
    }
    if batching:
        model_settings.update(max_batch_size=MAX_BATCH, max_batch_time=0.002)
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    argv = [str(python.parent / "mlserver"), "start", str(folder)]
    env = {"PYTHONPATH": str(folder)}
    return Server(name, argv, port, case.name, cwd=folder, env=env, grpc_port=grpc_port)


@contextlib.contextmanager
def alone(servers: list[Server], measured: Server | None) -> Iterator[None]:
    """Pause every server but ``measured`` (SIGSTOP to its process group) while the
    block runs. Idle servers are not idle: timers, metrics, worker heartbeats and the
    collector wake them, and on a 2-core machine each wake-up delays the measured
    server's requests (its tail latency). ``measured=None`` pauses all (the ceiling)."""
    others = [s for s in servers if s is not measured]
    for server in others:
        server.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for server in others:
            server.signal(signal.SIGCONT)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and all its descendants."""
    stats: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (parent, _) in stats.items() if parent == p)
    return total


def drain(pid: int, timeout: float = 60.0) -> float:
    """Wait until the server has worked off what it still holds (requests
    queued when the load stopped would slow the next cell); its CPU seconds."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_seconds(pid)
        if now - before < 0.025:  # under 10 % of a core: idle
            return now
        before = now
    return before


# --------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------


@dataclass
class Sample:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int


def run_wrk(url: str, body: Body, concurrency: int, seconds: int, tmp: Path) -> Sample:
    body_file = tmp / "body.bin"
    body_file.write_bytes(body.data)
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "CONTENT_TYPE": body.content_type,
        "METHOD": body.method,
        "HEADER_LENGTH": "" if body.header_length is None else str(body.header_length),
    }
    argv = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
        "-s", str(PEERS / "post.lua"), url,
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            ok = r["requests"] > r["status_errors"]
            return Sample(
                requests=r["requests"] - r["status_errors"],
                seconds=r["duration_us"] / 1e6,
                p50_ms=r["p50_us"] / 1000 if ok else float("nan"),
                p99_ms=r["p99_us"] / 1000 if ok else float("nan"),
                errors=r["status_errors"] + r["socket_errors"],
            )
    raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")


def ghz_path() -> str | None:
    """ghz as bench/build_ghz.sh leaves it, else on PATH."""
    built = CACHE / "tools" / "bin" / "ghz"
    return str(built) if os.access(built, os.X_OK) else shutil.which("ghz")


def run_ghz(target: str, body: Body, concurrency: int, seconds: int, tmp: Path) -> Sample:
    """Closed-loop gRPC load: ``concurrency`` calls in flight on one HTTP/2 connection
    (as one gRPC channel carries them), on one OS thread like wrk."""
    ghz = ghz_path()
    assert ghz is not None
    body_file = tmp / "grpc-request.bin"
    body_file.write_bytes(body.data)
    argv = [
        ghz, "--insecure", "--proto", str(PROTO), "--call", body.path,
        "--binary-file", str(body_file), "--concurrency", str(concurrency), "--connections", "1",
        "--duration", f"{seconds}s", "--duration-stop", "ignore", "--timeout", "30s",
        "--format", "json", target,
    ]  # fmt: skip
    env = {**os.environ, "GOMAXPROCS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    try:
        r = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"ghz failed: {done.stdout[-2000:]}\n{done.stderr[-2000:]}") from None
    ok = int((r.get("statusCodeDistribution") or {}).get("OK", 0))
    latency = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
    nan = float("nan")
    return Sample(
        requests=ok,
        seconds=r["total"] / 1e9,
        p50_ms=latency.get(50, nan) if ok else nan,
        p99_ms=latency.get(99, nan) if ok else nan,
        errors=int(r["count"]) - ok,
    )


def run_python_client(url: str, body: Body, concurrency: int, seconds: int) -> Sample:
    import aiohttp

    headers = {"Content-Type": body.content_type} if body.content_type else {}
    if body.header_length is not None:
        headers[BINARY_HEADER] = str(body.header_length)
    latencies: list[float] = []
    errors = 0

    async def client(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.request(
                    body.method, url, data=body.data or None, headers=headers
                ) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(*(client(session, deadline) for _ in range(concurrency)))
            return time.perf_counter() - started

    elapsed = asyncio.run(main())
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return Sample(len(lat), elapsed, pct(50), pct(99), errors)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def ceiling(session: Any, shape: tuple[int, ...], concurrency: int, seconds: float) -> dict:
    """Rows/s of ONNX Runtime alone on batches of min(concurrency, MAX_BATCH) rows."""
    rows = min(concurrency, MAX_BATCH)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(1).uniform(0, 1, size=(rows, *shape)).astype(np.float32)
    session.run(None, {name: x})
    times: list[float] = []
    cpu = time.thread_time()  # one intra-op thread: ONNX Runtime runs on this thread
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    cpu = time.thread_time() - cpu
    times.sort()
    return {
        "rps": rows * len(times) / sum(times),
        "cpu_s_per_1000": cpu / (rows * len(times)) * 1000,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] * 1000,
        "rows_per_call": rows,
    }


def check_answers(servers: list[Server], bodies: dict[str, Body], expected: np.ndarray) -> None:
    """Which protocols each server answers, and answers right (vs ONNX Runtime here)."""
    import grpc

    for server in servers:
        for protocol, body in bodies.items():
            headers: Any = {}
            if protocol == GRPC:
                if server.grpc_port is None:
                    server.protocols[protocol] = "no gRPC"
                    continue
                try:
                    content = grpc_infer(server.grpc_target, body.data)
                except grpc.RpcError as exc:
                    server.protocols[protocol] = f"gRPC {exc.code().name}: {exc.details()}"
                    continue
            else:
                url = server.url + body.path.format(model=server.model)
                try:
                    status, headers, content = post(url, body)
                except OSError as exc:
                    server.protocols[protocol] = f"no answer ({exc})"
                    continue
                if status != 200:
                    server.protocols[protocol] = f"HTTP {status}"
                    continue
            try:
                got = decode_answer(protocol, headers, content)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                server.protocols[protocol] = f"unreadable answer ({type(exc).__name__})"
                continue
            if got.shape != expected.shape or not np.allclose(got, expected, atol=ATOL):
                server.protocols[protocol] = "wrong answer"
                continue
            server.protocols[protocol] = "ok"


def bench_model(case: ModelCase, args: argparse.Namespace, use_wrk: bool) -> dict[str, Any]:
    store = model_store(case)
    onnx_file = store / case.name / "1" / "model.onnx"
    session = ort_session(onnx_file)
    row = np.random.default_rng(0).uniform(0, 1, size=case.shape).round(3).astype(np.float32)
    expected = session.run(None, {session.get_inputs()[0].name: row[None]})[0]
    bodies = {p: b for p, b in request_bodies(row, case.name).items() if p in args.protocols}
    result: dict[str, Any] = {"model": case.name, "shape": list(case.shape), "cells": []}
    with tempfile.TemporaryDirectory(prefix="kerasop-peers-") as tmp_text:
        tmp = Path(tmp_text)
        servers = [
            make_server(name, store, case, tmp, args.kerasop_args, GRPC in bodies)
            for name in args.servers
        ]
        try:
            for server in servers:
                server.start(tmp)
            for server in servers:
                server.wait_ready(args.startup_timeout)
            check_answers(servers, bodies, expected)
            result["support"] = {s.name: dict(s.protocols) for s in servers}
            if "kerasop" in result["support"]:
                result["support"]["kerasop"][FLOOR] = "ok"
            for s in servers:
                bad = {p: why for p, why in s.protocols.items() if why != "ok"}
                if bad:
                    print(f"  {case.name}: {s.name} left out for {bad}", flush=True)

            samples: dict[tuple[str, str, int], list[tuple[Sample, float]]] = {}
            ceilings: dict[int, list[dict[str, float]]] = {}

            def cell(server: Server, protocol: str, concurrency: int, seconds: int) -> Sample:
                body = FLOOR_BODY if protocol == FLOOR else bodies[protocol]
                if protocol == GRPC:
                    return run_ghz(server.grpc_target, body, concurrency, seconds, tmp)
                url = server.url + body.path.format(model=server.model)
                if use_wrk:
                    return run_wrk(url, body, concurrency, seconds, tmp)
                return run_python_client(url, body, concurrency, seconds)

            def measure(server: Server, protocol: str, concurrency: int) -> None:
                """One cell with the others paused, and the server's CPU until it is idle."""
                assert server.proc is not None
                with alone(servers, server):
                    cpu = tree_cpu_seconds(server.proc.pid)
                    sample = cell(server, protocol, concurrency, args.duration)
                    cpu = drain(server.proc.pid) - cpu
                samples.setdefault((server.name, protocol, concurrency), []).append((sample, cpu))

            for server in servers:  # warm-up: connections, allocators, lazy imports
                with alone(servers, server):
                    for protocol in bodies:
                        if server.protocols[protocol] == "ok":
                            cell(server, protocol, 4, args.warmup)
            ours = next((s for s in servers if s.name == "kerasop"), None)
            for round_no in range(args.rounds):
                for concurrency in args.concurrency:  # the engine alone, in the same rounds
                    with alone(servers, None):
                        ceilings.setdefault(concurrency, []).append(
                            ceiling(session, case.shape, concurrency, args.duration)
                        )
                    if ours is not None:
                        measure(ours, FLOOR, concurrency)
                for protocol in bodies:
                    for concurrency in args.concurrency:
                        shift = round_no % len(servers)
                        for server in servers[shift:] + servers[:shift]:
                            if server.protocols[protocol] != "ok":
                                continue
                            if server.name == "naive" and concurrency > args.naive_max_concurrency:
                                continue
                            measure(server, protocol, concurrency)
                    print(f"  {case.name}: round {round_no + 1} {protocol} done", flush=True)
        finally:
            for server in servers:
                server.stop()
    for (name, protocol, concurrency), parts in samples.items():
        result["cells"].append(summarise(name, protocol, concurrency, parts))
    for concurrency, parts in ceilings.items():
        cell = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        result["cells"].append(
            {"server": "ceiling", "protocol": "-", "concurrency": concurrency, **cell}
        )
    return result


def summarise(
    name: str, protocol: str, concurrency: int, parts: list[tuple[Sample, float]]
) -> dict:
    requests = sum(s.requests for s, _ in parts)
    cpu = sum(c for _, c in parts)
    rounds = [
        {
            "rps": round(s.requests / s.seconds, 1),
            "p50_ms": round(s.p50_ms, 3),
            "p99_ms": round(s.p99_ms, 3),
            "requests": s.requests,
            "errors": s.errors,
            "seconds": round(s.seconds, 3),
            "cpu_s": round(c, 3),
        }
        for s, c in parts
    ]

    def median(values: list[float]) -> float:
        values = [v for v in values if v == v]  # drop NaN (a round with no answer)
        return statistics.median(values) if values else float("nan")

    return {
        "server": name,
        "protocol": protocol,
        "concurrency": concurrency,
        "rps": median([s.requests / s.seconds for s, _ in parts]),
        "rounds": rounds,  # every round, in the order run; the figures above: their medians
        "p50_ms": median([s.p50_ms for s, _ in parts]),
        "p99_ms": median([s.p99_ms for s, _ in parts]),
        "errors": sum(s.errors for s, _ in parts),
        "requests": requests,
        "cpu_s_per_1000": cpu / requests * 1000 if requests else float("nan"),
    }


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def print_configs(meta: dict[str, Any]) -> None:
    """Each server's configuration in words, and the versions it ran with."""
    print(f"\n{meta.get('date', '')}: {meta.get('machine', '')}; HTTP load: {meta.get('loadgen')}")
    print(f"gRPC load: {meta.get('grpc_loadgen', '-')}")
    print(f"{meta.get('duration_s')} s per cell, {meta.get('rounds')} interleaved rounds\n")
    print("| server | configuration | versions |")
    print("|---|---|---|")
    for name, server in meta.get("servers", {}).items():
        versions = ", ".join(f"{k} {v}" for k, v in server["versions"].items())
        print(f"| {name} | {server['config']} | {versions} |")


def print_tables(results: list[dict[str, Any]]) -> None:
    for model in results:
        cells = model["cells"]
        print(f"\n## {model['model']} {model['shape']}\n")
        print("| protocol | conc | server | req/s | p50 ms | p99 ms | errors | CPU s / 1000 req |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for c in sorted(cells, key=lambda c: (c["protocol"], c["concurrency"], -c["rps"])):
            cpu = fmt(c.get("cpu_s_per_1000", float("nan")), 2)
            print(
                f"| {c['protocol']} | {c['concurrency']} | {c['server']} | {fmt(c['rps'])}"
                f" | {fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 2)} | {c.get('errors', 0)} | {cpu} |"
            )
        print(f"\n{model['model']}: this server against the best peer at each cell\n")
        print(
            "| protocol | conc | kerasop req/s (p99) | best peer req/s (p99) | x best | x ceiling |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        ceilings = {c["concurrency"]: c["rps"] for c in cells if c["server"] == "ceiling"}
        for c in sorted(cells, key=lambda c: (c["protocol"], c["concurrency"])):
            if c["server"] != "kerasop" or c["protocol"] == FLOOR:
                continue
            peers = [
                p for p in cells
                if p["protocol"] == c["protocol"] and p["concurrency"] == c["concurrency"]
                and p["server"] not in ("kerasop", "ceiling")
            ]  # fmt: skip
            best = max(peers, key=lambda p: p["rps"] if p["rps"] == p["rps"] else -1, default=None)
            peer = f"{fmt(best['rps'])} ({fmt(best['p99_ms'])}) {best['server']}" if best else "-"
            ratio = fmt(c["rps"] / best["rps"], 2) if best and best["rps"] else "-"
            top = ceilings.get(c["concurrency"])
            print(
                f"| {c['protocol']} | {c['concurrency']} | {fmt(c['rps'])} ({fmt(c['p99_ms'])})"
                f" | {peer} | {ratio} | {fmt(c['rps'] / top, 2) if top else '-'} |"
            )


def print_side_by_side(results: list[dict[str, Any]]) -> None:
    """The table of docs/performance.md: req/s (p50 / p99 ms), one column per server."""
    for model in results:
        cells, support = model["cells"], model.get("support", {})
        ceilings = {c["concurrency"]: c for c in cells if c["server"] == "ceiling"}
        protocols = list(dict.fromkeys(c["protocol"] for c in cells if c["server"] != "ceiling"))
        servers = [s for s in SERVERS if s in support]
        print(f"\n{model['model']} {model['shape']}: req/s (p50 / p99 ms)\n")
        print(f"| protocol | conc | {' | '.join(servers)} | ceiling rows/s (CPU s / 1000 rows) |")
        print("|---|---:|" + "---:|" * (len(servers) + 1))
        for protocol in protocols:
            for concurrency in sorted(ceilings):
                row = []
                for server in servers:
                    found = [
                        c for c in cells if c["server"] == server
                        and c["protocol"] == protocol and c["concurrency"] == concurrency
                    ]  # fmt: skip
                    if support[server].get(protocol) != "ok":
                        row.append("n/a")
                    elif not found:
                        row.append("-")
                    elif not found[0]["requests"]:
                        row.append("0 (none answered in the cell)")
                    else:
                        c = found[0]
                        row.append(
                            f"{fmt(c['rps'], 0 if c['rps'] >= 10 else 1)}"
                            f" ({fmt(c['p50_ms'], 0)} / {fmt(c['p99_ms'], 0)})"
                        )
                top = ceilings[concurrency]
                print(
                    f"| {protocol} | {concurrency} | {' | '.join(row)} | {fmt(top['rps'], 0)}"
                    f" ({fmt(top.get('cpu_s_per_1000', float('nan')), 2)}) |"
                )


def plot(results: list[dict[str, Any]], protocols: list[str], target: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    fig, axes = plt.subplots(
        len(results), len(protocols), figsize=(5 * len(protocols), 3.6 * len(results)),
        squeeze=False,
    )  # fmt: skip
    for i, model in enumerate(results):
        for j, protocol in enumerate(protocols):
            ax = axes[i][j]
            for k, server in enumerate([*SERVERS, "ceiling"]):
                cells = sorted(
                    (c for c in model["cells"] if c["server"] == server
                     and c["protocol"] in (protocol, "-")),
                    key=lambda c: c["concurrency"],
                )  # fmt: skip
                if cells:
                    style = "--" if server == "ceiling" else "-o"
                    x = [c["concurrency"] for c in cells]
                    ax.plot(x, [c["rps"] for c in cells], style, color=f"C{k}", label=server)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")  # the dense model's ceiling is 100x any server
            ax.set_title(f"{model['model']}, {protocol}")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel("requests / s")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny CNN, c=1,8, 1 round")
    p.add_argument("--models", default="dense,cnn")
    p.add_argument("--concurrency", default=None, help="default 1,8,32,64 (quick: 1,8)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument(
        "--duration", type=int, default=None, help="s per cell per round (default 10, max 30)"
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="s per server and protocol")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--naive-max-concurrency", type=int, default=8,
        help="the naive server answers one request at a time: more clients only queue (default 8)",
    )  # fmt: skip
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument(
        "--kerasop-args", default=[], type=shlex.split,
        help='more kerasop-serve options, e.g. "--max-batch-size 8"',
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument(
        "--tables-from", type=Path, default=None,
        help="only print the tables of an earlier run's JSON",
    )  # fmt: skip
    args = p.parse_args(argv)
    quick = args.quick
    args.concurrency = [
        int(c) for c in (args.concurrency or ("1,8" if quick else "1,8,32,64")).split(",")
    ]
    args.duration = max(1, min(30, args.duration or (1 if quick else 10)))
    args.rounds = max(1, min(10, args.rounds or (1 if quick else 3)))
    args.warmup = args.warmup if args.warmup is not None else 1
    args.protocols = [x for x in args.protocols.split(",") if x]
    args.servers = [x for x in args.servers.split(",") if x]
    for name in args.protocols:
        if name not in PROTOCOLS:
            p.error(f"unknown protocol {name}; choose from {', '.join(PROTOCOLS)}")
    for name in args.servers:
        if name not in SERVERS:
            p.error(f"unknown server {name}; choose from {', '.join(SERVERS)}")
    if max(args.concurrency) > 256 or min(args.concurrency) < 1:
        p.error("concurrency must be within 1..256")
    catalogue = QUICK_MODELS if quick else MODELS
    args.models = [catalogue[m] for m in args.models.split(",") if m]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tables_from is not None:  # print and plot an earlier run again
        earlier = json.loads(args.tables_from.read_text())
        results = earlier["models"]
        print_configs(earlier["meta"])
        print_tables(results)
        print_side_by_side(results)
        plot(results, args.protocols, args.tables_from.with_suffix(".png"))
        return 0
    missing = [s for s in args.servers if s in PEER_VENVS and not peer_python(s)]
    if missing:
        print(f"left out {missing}: no venv under {VENVS} (run bench/setup_peers.sh)")
        args.servers = [s for s in args.servers if s not in missing]
    ghz = ghz_path()
    if GRPC in args.protocols and ghz is None:
        print("left out the grpc cells: no ghz (run bench/build_ghz.sh)")
        args.protocols = [p for p in args.protocols if p != GRPC]
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    loadgen = "wrk 1 thread (Lua: bench/peers/post.lua)" if use_wrk else "python aiohttp client"
    started = time.time()
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "loadgen": loadgen,
        "grpc_loadgen": f"{ghz_version(ghz)}, 1 connection, GOMAXPROCS=1"
        if GRPC in args.protocols
        else "-",
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "servers": {
            s: {"config": CONFIGS[s], "versions": server_versions(s)} for s in args.servers
        },
        "duration_s": args.duration,
        "rounds": args.rounds,
    }
    print_configs(meta)
    print(flush=True)
    results = [bench_model(case, args, bool(use_wrk)) for case in args.models]
    meta["seconds"] = round(time.time() - started)
    print_configs(meta)
    print_tables(results)
    print_side_by_side(results)
    stem = "serving_peers_quick" if args.quick else "serving_peers"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "models": results}, indent=1))
    plotted = plot(results, args.protocols, args.out / f"{stem}.png")
    print(f"\nwrote {args.out / (stem + '.json')}" + (f" and {stem}.png" if plotted else ""))
    return 0


# What each server's versions line names: the engine, the server package, its HTTP and
# gRPC stacks.
VERSIONED = {
    "kerasop": ("onnxruntime", "aiohttp", "uvloop", "grpcio", "numpy"),
    "kserve": ("kserve", "onnxruntime", "uvicorn", "grpcio", "numpy"),
    "mlserver": ("mlserver", "onnxruntime", "uvicorn", "grpcio", "numpy"),
    "naive": ("tensorflow-cpu", "keras", "aiohttp"),
}


def server_versions(name: str) -> dict[str, str]:
    """The versions of the packages ``name`` runs with, read in its own Python."""
    python = sys.executable if name in ("kerasop", "naive") else str(peer_python(name))
    packages = VERSIONED[PEER_VENVS.get(name, name)]
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(p):\n"
        "    try:\n        return m.version(p)\n"
        "    except m.PackageNotFoundError:\n        return '-'\n"
        "print(json.dumps({p: v(p) for p in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [python, "-c", code, *packages], capture_output=True, text=True, check=True
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def ghz_version(ghz: str | None) -> str:
    """bench/build_ghz.sh's binary is named by version (``go install`` builds report "dev")."""
    if ghz is None:
        return "-"
    name = Path(ghz).resolve().name
    if name.startswith("ghz-"):
        return f"ghz {name[len('ghz-') :]}"
    done = subprocess.run([ghz, "--version"], capture_output=True, text=True, check=False)
    return f"ghz {(done.stdout or done.stderr).strip()}"


if __name__ == "__main__":
    sys.exit(main())
