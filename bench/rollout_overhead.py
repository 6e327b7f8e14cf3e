"""What a rollout costs the live path: one version vs a canary split vs shadowing.

    python bench/rollout_overhead.py [--model dense|cnn] [--concurrency 16] [--duration 6]
                                     [--rounds 3] [--engine onnx] [--weight 10]
                                     [--compare-with OTHER_CHECKOUT]

Writes two versions of a random-weight model into a temporary store and starts
three ``kerasop-serve`` subprocesses (127.0.0.1, free ports), each with a
rollout file:

  single   {"stable": 1}                                  one version loaded
  split    {"stable": 1, "candidate": 2, "weight": W}     W% of the requests on v2
  shadow   {"stable": 1, "candidate": 2, "shadow": true}  every request copied to v2

The closed-loop load of ``serving_load.py`` visits them in interleaved rounds
(v1 protocol, one row per request). Reports throughput, p50/p99, errors, the
server's CPU time per request (its ``process_cpu_seconds_total`` over the
requests answered: less sensitive to a busy machine than wall time), the model
calls per 100 requests (fewer rows per call cost more CPU per request), and for
shadow how many copies were compared and how many were dropped by the bounded
queue (dropping is what keeps the live path from waiting on the shadow).

``--compare-with DIR`` also runs the three configurations with the server code
of another checkout (e.g. ``git worktree add /tmp/old <commit>``) in the same
interleaved rounds: a before/after on a shared machine, within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_load import (
    REPO,
    load,
    merge,
    start_server,
    stop_servers,
    wait_ready,
    write_store,
)


def plans(weight: int) -> dict[str, dict[str, object]]:
    return {
        "single": {"stable": 1},
        "split": {"stable": 1, "candidate": 2, "weight": weight},
        "shadow": {"stable": 1, "candidate": 2, "shadow": True},
    }


def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def shadow_counts(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples(url, "kerasop_server_shadow_comparisons_total"):
        out[labels["result"]] = out.get(labels["result"], 0) + value
    return out


def wait_candidate(url: str, label: str, timeout: float = 180) -> None:
    """Wait until the server has loaded version 2 beside stable (it loads after stable)."""
    deadline = time.monotonic() + timeout
    while not any(v == 2 for _, v in samples(url, "kerasop_server_candidate_version")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: the candidate did not load")
        time.sleep(0.2)


def cpu_answers_calls(url: str) -> tuple[float, float, float]:
    """CPU time (user + system) the server process has used, predictions it answered,
    and model calls it made (live and shadow)."""
    cpu = sum(value for _, value in samples(url, "process_cpu_seconds_total"))
    answered = sum(
        value
        for labels, value in samples(url, "kerasop_server_requests_total")
        if labels["endpoint"] == "v1_predict"
    )
    calls = sum(value for _, value in samples(url, "kerasop_server_batch_size_count"))
    return cpu, answered, calls


def measured(url: str, path: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """One round of load, with the server CPU it cost and the requests it answered
    (both counted by the server, warm-up included)."""
    before = cpu_answers_calls(url)
    result = asyncio.run(load(url, path, body, concurrency, seconds))
    after = cpu_answers_calls(url)
    result["cpu"], result["answered"], result["model_calls"] = (
        b - a for a, b in zip(before, after, strict=True)
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("dense", "cnn"), default="dense")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", default="onnx")
    p.add_argument("--weight", type=int, default=10, help="percent to the candidate in split")
    p.add_argument("--compare-with", type=Path, help="another checkout to run side by side")
    args = p.parse_args(argv)
    concurrency = max(1, min(args.concurrency, 256))
    duration = max(1.0, min(args.duration, 60.0))
    rounds = max(1, min(args.rounds, 20))
    weight = max(1, min(args.weight, 100))
    servers = []
    with tempfile.TemporaryDirectory(prefix="kerasop-rollout-") as tmp:
        store = Path(tmp) / "store"
        model, row, _ = write_store(store, args.model)
        write_store(store, args.model)  # version 2: the same network and weights (all agree)
        path, body = f"/v1/models/{model}:predict", json.dumps({"instances": [row]}).encode()
        try:
            checkouts = [("", REPO)]
            if args.compare_with is not None:
                checkouts.insert(0, (f"{args.compare_with.name} ", args.compare_with.resolve()))
            for prefix, repo in checkouts:
                for config, plan in plans(weight).items():
                    label = prefix + config
                    plan_file = Path(tmp) / f"{len(servers)}.json"
                    plan_file.write_text(json.dumps(plan))
                    proc, url = start_server(
                        store, model, args.engine, ["--rollout-file", str(plan_file)], repo
                    )
                    servers.append((label, proc, url))
            for _, proc, url in servers:
                asyncio.run(wait_ready(url, proc))
            for label, _, url in servers:
                if not label.endswith("single"):
                    wait_candidate(url, label)
            parts: dict[str, list[dict[str, float]]] = {}
            cpu_ms: dict[str, float] = {}
            calls_per_100: dict[str, float] = {}
            for round_ in range(rounds):
                for label, _, url in servers:
                    r = measured(url, path, body, concurrency, duration / rounds)
                    parts.setdefault(label, []).append(r)
                    print(f"  round {round_ + 1}: {label}: {r['rps']:.0f} req/s", file=sys.stderr)
            for label, _, _ in servers:
                answered = sum(p["answered"] for p in parts[label])
                cpu_ms[label] = 1000 * sum(p["cpu"] for p in parts[label]) / answered
                calls_per_100[label] = 100 * sum(p["model_calls"] for p in parts[label]) / answered
            results = [(label, merge(parts[label], duration)) for label, _, _ in servers]
            shadow = shadow_counts(servers[-1][2])
        finally:
            stop_servers([proc for _, proc, _ in servers])
    print(
        f"\nmodel {args.model}, engine {args.engine}, {concurrency} clients, {duration:.0f} s"
        f" in {rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    by_label = dict(results)
    print(
        "| config | requests | errors | req/s | vs single | p50 ms | p99 ms | vs single"
        " | server CPU ms/request | vs single | model calls per 100 requests |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in results:
        single = label.rsplit(" ", 1)[0] + " single" if " " in label else "single"
        base, base_cpu = by_label[single], cpu_ms[single]  # the same checkout's one version
        name = label.replace("split", f"split {weight}%")
        print(
            f"| {name} | {r['requests']} | {r['errors']} | {r['rps']:.0f}"
            f" | {100 * (r['rps'] / base['rps'] - 1):+.0f}% | {r['p50']:.1f} | {r['p99']:.1f}"
            f" | {100 * (r['p99'] / base['p99'] - 1):+.0f}% | {cpu_ms[label]:.3f}"
            f" | {100 * (cpu_ms[label] / base_cpu - 1):+.0f}% | {calls_per_100[label]:.0f} |"
        )
    compared = shadow.get("agree", 0) + shadow.get("disagree", 0)
    print(
        f"\nshadow: {compared:.0f} copies compared ({shadow.get('agree', 0):.0f} agree),"
        f" {shadow.get('dropped', 0):.0f} dropped by the bounded queue,"
        f" {shadow.get('error', 0):.0f} failed (includes warm-up traffic)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
