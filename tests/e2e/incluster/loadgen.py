"""A bounded load generator (runtime-image pod; standard library only).

    python /scripts/loadgen.py --host SVC --model NAME --csv /data/dense/train.csv \
        --concurrency 2 --interval 0.05 --max-seconds 300 --stop-file /tmp/stop-x

Each worker thread sends predictions on a fresh connection, alternating the TF Serving v1
and the Open Inference v2 protocol, until the stop file appears or --max-seconds pass.
A request counts as failed unless it gets 200 with a well-formed answer for every row.
Prints a progress line every 5 s (stderr) and one ``RESULT {json}`` line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from httpkit import call, csv_rows, v1_body, v1_values, v2_body, v2_values


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.versions: dict[str, dict[str, float]] = {}
        self.latencies: list[float] = []
        self.t0 = time.monotonic()

    def record(
        self, ok: bool, latency: float, error: str | None = None, version: str | None = None
    ) -> None:
        now = round(time.monotonic() - self.t0, 2)
        with self.lock:
            self.total += 1
            self.latencies.append(latency)
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 30:
                    self.errors.append(f"t={now}s {error}")
            if version is not None:
                v = self.versions.setdefault(version, {"count": 0, "first": now, "last": now})
                v["count"] += 1
                v["last"] = now


def worker(i: int, args, rows, stats: Stats, stop: threading.Event) -> None:
    n = i
    while not stop.is_set():
        protocol = "v1" if n % 2 == 0 else "v2"
        n += 1
        t = time.monotonic()
        try:
            if protocol == "v1":
                s, resp = call(
                    args.host,
                    args.port,
                    "POST",
                    f"/v1/models/{args.model}:predict",
                    v1_body(rows),
                    timeout=args.timeout,
                )
                good = s == 200 and len(v1_values(resp)) == len(rows)
                stats.record(
                    good, time.monotonic() - t, None if good else f"v1 {s} {str(resp)[:200]}"
                )
            else:
                s, resp = call(
                    args.host,
                    args.port,
                    "POST",
                    f"/v2/models/{args.model}/infer",
                    v2_body(rows),
                    timeout=args.timeout,
                )
                good = s == 200 and len(v2_values(resp)) == len(rows)
                version = resp.get("model_version") if good else None
                stats.record(
                    good,
                    time.monotonic() - t,
                    None if good else f"v2 {s} {str(resp)[:200]}",
                    version,
                )
        except Exception as exc:
            stats.record(False, time.monotonic() - t, f"{protocol} {type(exc).__name__}: {exc}")
        if args.interval:
            stop.wait(args.interval)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--model", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--stop-file", required=True)
    args = p.parse_args()

    rows = csv_rows(args.csv, args.rows)
    stats = Stats()
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(i, args, rows, stats, stop), daemon=True)
        for i in range(args.concurrency)
    ]
    for t in threads:
        t.start()
    print(
        f"loadgen started: {args.concurrency} workers -> {args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    next_report = time.monotonic() + 5
    deadline = time.monotonic() + args.max_seconds
    stopped_by = "max-seconds"
    while time.monotonic() < deadline:
        if os.path.exists(args.stop_file):
            stopped_by = "stop-file"
            break
        time.sleep(0.2)
        if time.monotonic() >= next_report:
            next_report += 5
            with stats.lock:
                print(
                    f"t={time.monotonic() - stats.t0:.0f}s total={stats.total} failed={stats.failed} "
                    f"versions={ {k: v['count'] for k, v in stats.versions.items()} }",
                    file=sys.stderr,
                    flush=True,
                )
    stop.set()
    for t in threads:
        t.join(args.timeout + 5)
    lat = sorted(stats.latencies) or [0.0]
    result = {
        "total": stats.total,
        "ok": stats.ok,
        "failed": stats.failed,
        "errors": stats.errors,
        "versions": stats.versions,
        "seconds": round(time.monotonic() - stats.t0, 2),
        "stoppedBy": stopped_by,
        "latencyP50": round(lat[len(lat) // 2], 4),
        "latencyP99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 4),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
