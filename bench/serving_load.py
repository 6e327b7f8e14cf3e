"""Closed-loop HTTP load against a local model server: batching on vs off.

    python bench/serving_load.py [--model dense|cnn] [--concurrency 32] [--duration 10]
                                 [--engines onnx,keras] [--protocol v1|v2] [--payload json|png]

For each engine, starts ``kerasop-serve`` (a subprocess on 127.0.0.1, free
port) on a temporary store holding a random-weight model, twice:
  batching on   --max-batch-size 32 --batch-timeout-ms 2 (the defaults)
  batching off  --max-batch-size 1  (every request is its own model call)
and runs ``concurrency`` clients, each sending one-row predict requests
back-to-back (closed loop). All servers run at once and the load visits them
in ``rounds`` interleaved rounds (each ``duration / rounds`` seconds after a
1 s warm-up), so a noisy neighbour on the machine slows every config alike.
Reports throughput, latency percentiles, errors and the mean rows per model
call (from the server's /metrics). Traffic goes to 127.0.0.1 only, and
duration and concurrency are capped.

The load generator shares the machine with the server: on a 2-core machine
it takes a large part of the CPU, so absolute numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO))

MAX_DURATION, MAX_CONCURRENCY = 60.0, 256
HOST = "127.0.0.1"


def write_store(root: Path, kind: str) -> tuple[str, list[float], tuple[int, ...]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from serving_engines import build

    from kerasop.store import ModelStore

    model = build(kind)
    shape = (784,) if kind == "dense" else (64, 64, 3)
    model.predict_on_batch(__import__("numpy").zeros((1, *shape), "float32"))
    meta = {
        "name": kind,
        "input": {
            "kind": "tabular" if kind == "dense" else "image",
            "shape": list(shape),
            "dtype": "float32",
        },
        "output": {"shape": list(model.outputs[0].shape[1:])},
    }
    if kind == "cnn":
        meta["input"]["image"] = {"height": 64, "width": 64, "channels": 3}
    with ModelStore(root).new_version(kind) as pending:
        model.export(str(pending.path), format="tf_saved_model", verbose=False)
        model.save(pending.path / "model.keras")
        (pending.path / "metadata.json").write_text(json.dumps(meta))
    import numpy as np

    row = np.random.default_rng(0).uniform(0, 255 if kind == "cnn" else 1, size=shape)
    return kind, row.round(2).tolist(), shape


def png_b64(row: list) -> str:
    import base64
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(row, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(
    store: Path, model: str, engine: str, extra: list[str], repo: Path = REPO
) -> tuple[subprocess.Popen, str]:
    """A ``kerasop-serve`` subprocess running the code of checkout ``repo``."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "kerasop_server.main",
        "--store-root",
        str(store),
        "--model",
        model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--engine",
        engine,
        "--log-level",
        "WARNING",
        *extra,
    ]
    # No gRPC port (8081 by default): several servers run side by side; older checkouts
    # (before gRPC) ignore the variable.
    path = os.pathsep.join([str(repo / "server"), str(repo)])
    env = {**os.environ, "PYTHONPATH": path, "KERASOP_GRPC_PORT": "0"}
    proc = subprocess.Popen(argv, env=env)
    return proc, f"http://{HOST}:{port}"


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/v2/health/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("server not ready")


async def load(
    url: str, path: str, body: bytes, concurrency: int, duration: float
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        headers = {"Content-Type": "application/json"}
        measuring = False
        stop_at = 0.0

        async def client() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if measuring and t0 >= stop_at:
                    return
                try:
                    async with session.post(url + path, data=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if measuring:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1

        tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)  # warm-up, not measured
        started = time.perf_counter()
        stop_at = started + duration
        measuring = True
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        async with session.get(f"{url}/metrics") as r:
            metrics = await r.text()
    count, total = batch_stats(metrics)
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {
        "latencies": lat,
        "elapsed": elapsed,
        "calls": count,
        "rows": total,
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / elapsed,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "mean": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "rows_per_call": total / count if count else float("nan"),
    }


def merge(parts: list[dict], duration: float) -> dict[str, float]:
    """One result from the rounds of a config (batch stats are cumulative on the server)."""
    lat = sorted(x for p in parts for x in p["latencies"])
    elapsed = sum(p["elapsed"] for p in parts)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    last = parts[-1]
    return {
        "requests": len(lat),
        "errors": sum(p["errors"] for p in parts),
        "rps": len(lat) / elapsed,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "rps_rounds": [round(p["rps"]) for p in parts],
        "rows_per_call": last["rows"] / last["calls"] if last["calls"] else float("nan"),
    }


def batch_stats(text: str) -> tuple[float, float]:
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("kerasop_server_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("kerasop_server_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


def stop_servers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every server, then wait for each (killed after 30 s)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("dense", "cnn"), default="dense")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--engines", default="onnx", help="comma-separated: onnx,keras")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    p.add_argument(
        "--payload",
        choices=("json", "png"),
        default="json",
        help="cnn only: pixels as JSON numbers, or a base64 PNG",
    )
    p.add_argument("--batch-timeout-ms", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0, help="engine threads (0 = server default)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds over the configs")
    args = p.parse_args(argv)
    concurrency = max(1, min(args.concurrency, MAX_CONCURRENCY))
    duration = max(1.0, min(args.duration, MAX_DURATION))
    rounds = max(1, min(args.rounds, 20))
    results = []
    with tempfile.TemporaryDirectory(prefix="kerasop-load-") as tmp:
        store = Path(tmp)
        model, row, shape = write_store(store, args.model)
        if args.payload == "png":
            if args.model != "cnn":
                p.error("--payload png needs --model cnn")
            png = png_b64(row)
            if args.protocol == "v1":
                payload = {"instances": [{"b64": png}]}
                path, body = f"/v1/models/{model}:predict", json.dumps(payload).encode()
            else:
                tensor = {"name": "input", "shape": [1], "datatype": "BYTES", "data": [png]}
                path, body = f"/v2/models/{model}/infer", json.dumps({"inputs": [tensor]}).encode()
        elif args.protocol == "v1":
            path, body = f"/v1/models/{model}:predict", json.dumps({"instances": [row]}).encode()
        else:
            flat = __import__("numpy").asarray(row).ravel().tolist()
            tensor = {"name": "input", "shape": [1, *shape], "datatype": "FP32", "data": flat}
            path, body = f"/v2/models/{model}/infer", json.dumps({"inputs": [tensor]}).encode()
        configs = [
            ("on", ["--max-batch-size", "32", "--batch-timeout-ms", str(args.batch_timeout_ms)]),
            ("off", ["--max-batch-size", "1"]),
        ]
        servers = []
        try:
            # All servers start first and stay up; the load then visits them in
            # interleaved rounds, so a noisy neighbour slows every config alike.
            for engine in args.engines.split(","):
                for label, extra in configs:
                    proc, url = start_server(
                        store, model, engine, [*extra, "--threads", str(args.threads)]
                    )
                    servers.append((engine, label, proc, url))
            for _, _, proc, url in servers:
                asyncio.run(wait_ready(url, proc))
            parts: dict[tuple[str, str], list[dict[str, float]]] = {}
            for round_ in range(rounds):
                for engine, label, _, url in servers:
                    r = asyncio.run(load(url, path, body, concurrency, duration / rounds))
                    parts.setdefault((engine, label), []).append(r)
                    print(
                        f"  round {round_ + 1}: {engine} batching {label}: {r['rps']:.0f} req/s",
                        file=sys.stderr,
                    )
            for engine, label, _, _ in servers:
                results.append((engine, label, merge(parts[(engine, label)], duration)))
        finally:
            stop_servers([proc for _, _, proc, _ in servers])
    print(
        f"\nmodel {args.model}, protocol {args.protocol}, payload {args.payload},"
        f" {concurrency} clients, {duration:.0f} s,"
        f" one row per request, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| engine | batching | requests | errors | req/s | req/s by round"
        " | p50 ms | p90 ms | p99 ms | rows/call |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for engine, label, r in results:
        print(
            f"| {engine} | {label} | {r['requests']} | {r['errors']} | {r['rps']:.0f}"
            f" | {' '.join(map(str, r['rps_rounds']))} | {r['p50']:.1f} | {r['p90']:.1f}"
            f" | {r['p99']:.1f} | {r['rows_per_call']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
