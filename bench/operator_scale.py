"""The operator at scale: N KerasTrainingJobs and M KerasModelServices, time until all have a status.

    python bench/operator_scale.py [--jobs 1000] [--services 200] [--operator local|cluster]
                                   [--runtime-image kerasop-runtime:0.1.0] [--timeout 900]
                                   [--no-restart] [--out bench/results] [--quick]

Against the cluster of ``$KUBECONFIG``, in a namespace the script creates and deletes.

1. N KerasTrainingJobs (suspended: the operator creates their suspended trainer Jobs,
   no pod runs) are created from a pool of client threads, as fast as the API server
   takes them; a watch records when each first shows ``status.phase``.
2. M KerasModelServices following those jobs (``model.trainingJob``: job i mod N; the
   jobs have no model yet, so each service waits for one and says so in its status).
   Same measurement.
3. With ``--operator local``: the operator restarted, seconds until it has resumed every
   object (``--no-restart`` skips it).

Per kind: seconds to create them all, seconds until every one has a status, the
per-object delay (its create answered -> its status seen) p50/p99, and the reconcile
errors in that window (``kerasop_reconcile_errors_total`` of the operator's /metrics,
and error lines in its log).

``--operator local`` (default): the script runs ``python -m kerasop_operator.main``
itself (watching only the bench namespace, default settings). Do not use it where an
operator is installed in the cluster: both would reconcile the same objects.
``--operator cluster``: the installed operator (``--operator-namespace``, pods labelled
app.kubernetes.io/component=operator); its metrics are read through the API server's pod
proxy, its log with ``kubectl logs``. Either way the memory is one metric, the operator's
own ``process_resident_memory_bytes`` (its RSS, from its /metrics), sampled (peak and last).

Results: a table on stdout, bench/results/operator_scale.json and .png
(``--quick``: 20 jobs, 5 services, operator_scale_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightkube
from lightkube.config.kubeconfig import KubeConfig

from kerasop_operator import kube as k
from kerasop_operator.kube import Kube

REPO = Path(__file__).resolve().parents[1]

API_VERSION = "kerasop.io/v1alpha1"
CREATE_THREADS = 16


# --------------------------------------------------------------------------------------------
# the objects


def training_job(name: str, namespace: str) -> dict[str, Any]:
    """A tiny, suspended job: the operator writes its children and status, no pod runs."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "suspend": True,
            "data": {"format": "csv", "path": "train.csv"},
            "model": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
            "training": {"epochs": 1},
        },
    }


def model_service(name: str, namespace: str, job: str) -> dict[str, Any]:
    """A service following ``job``, which has no model yet: it waits for one."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KerasModelService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"trainingJob": job}},
    }


# --------------------------------------------------------------------------------------------
# the operator: local process or in-cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name: sum over its labels}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
            if sample.name == "kerasop_reconcile_total":  # also by kind and trigger
                name = f"{sample.name}:{sample.labels.get('kind')}/{sample.labels.get('trigger')}"
                out[name] = out.get(name, 0.0) + sample.value
    return out


# kopf's JSON lines carry "severity"; its text lines the level name in capitals.
ERROR_LINE = re.compile(r'"severity":\s*"(error|critical)"|\b(ERROR|CRITICAL)\b')


def count_error_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if ERROR_LINE.search(line))


RSS = "process_resident_memory_bytes"


class OperatorUnderTest:
    """What both kinds of operator share: the memory, read from the operator's /metrics."""

    rss_peak = 0.0

    def metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def rss_mb(self) -> float | None:
        """The operator's RSS now (its ``process_resident_memory_bytes``, MB); the peak is kept."""
        try:
            rss = self.metrics().get(RSS)
        except (OSError, RuntimeError):
            return None
        if rss is None:
            return None
        self.rss_peak = max(self.rss_peak, rss / 2**20)
        return rss / 2**20

    def rss_peak_mb(self) -> float | None:
        return self.rss_peak or None


class LocalOperator(OperatorUnderTest):
    """``python -m kerasop_operator.main`` started by the script, watching one namespace."""

    where = "local process"

    def __init__(self, namespace: str, runtime_image: str, logdir: Path) -> None:
        self.namespace = namespace
        self.runtime_image = runtime_image
        self.log_path = logdir / "operator.log"
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KERASOP_WATCH_NAMESPACES": self.namespace,
            "KERASOP_RUNTIME_IMAGE": self.runtime_image,
            "KERASOP_METRICS_PORT": str(self.metrics_port),
            "KERASOP_HEALTH_PORT": str(self.health_port),
            "KERASOP_LOG_FORMAT": "json",
        }
        with open(self.log_path, "ab") as log:  # a restart appends
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kerasop_operator.main"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{self.log_text()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the operator did not come up:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_mark(self) -> Any:
        return len(self.log_text())

    def errors_logged_since(self, mark: Any) -> int:
        return count_error_lines(self.log_text()[mark:])

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return parse_metrics(r.read().decode())


class ClusterOperator(OperatorUnderTest):
    """The operator installed in the cluster (its pods found by label)."""

    where = "in-cluster"

    def __init__(self, kubectl: Callable[..., str], namespace: str, metrics_port: int) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.metrics_port = metrics_port

    def start(self) -> None:
        if not self.pods():
            raise RuntimeError(
                f"no operator pod in namespace {self.namespace} (label "
                "app.kubernetes.io/component=operator): install the chart, or use --operator local"
            )

    def stop(self) -> None:
        pass

    def pods(self) -> list[str]:
        out = self.kubectl(
            "-n", self.namespace, "get", "pods", "-l", "app.kubernetes.io/component=operator",
            "--field-selector=status.phase=Running", "-o", "name",
        )  # fmt: skip
        return [line.split("/", 1)[1] for line in out.split() if line]

    def log_mark(self) -> Any:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def errors_logged_since(self, mark: Any) -> int:
        return sum(
            count_error_lines(
                self.kubectl("-n", self.namespace, "logs", pod, f"--since-time={mark}")
            )
            for pod in self.pods()
        )

    def metrics(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for pod in self.pods():
            path = (
                f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{self.metrics_port}/proxy/metrics"
            )
            for name, value in parse_metrics(self.kubectl("get", "--raw", path)).items():
                total[name] = total.get(name, 0.0) + value
        return total


def kubectl_runner(kubeconfig: str | None) -> Callable[..., str]:
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"

    def run(*args: str) -> str:
        cmd = [binary, *(["--kubeconfig", kubeconfig] if kubeconfig else []), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])}: {done.stderr.strip()[:500]}")
        return done.stdout

    return run


# --------------------------------------------------------------------------------------------
# measuring


@dataclass
class StatusWatch:
    """When each object of a kind first shows ``status.phase`` (a watch in a thread)."""

    client: lightkube.Client
    kind: k.Kind
    namespace: str
    seen: dict[str, float] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for _, obj in self._events():
            meta, st = obj.get("metadata") or {}, obj.get("status") or {}
            phase = st.get("phase")
            if phase:
                with self.lock:
                    self.seen.setdefault(meta["name"], time.monotonic())
                    self.phases[meta["name"]] = phase

    def _events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:  # a watch ends after the server's timeout: start the next one
            try:
                for kind, obj in self.client.watch(self.kind.res, namespace=self.namespace):
                    yield kind, obj.to_dict()
            except Exception as exc:  # a dropped connection: watch again
                print(f"  (watch of {self.kind.kind} restarted: {type(exc).__name__})")
                time.sleep(0.5)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_kind(
    api: Kube,
    client: lightkube.Client,
    operator: LocalOperator | ClusterOperator,
    kind: k.Kind,
    docs: list[dict[str, Any]],
    namespace: str,
    timeout: float,
) -> dict[str, Any]:
    watch = StatusWatch(client, kind, namespace)
    watch.start()
    metrics_before = operator.metrics()
    mark = operator.log_mark()
    created: dict[str, float] = {}
    rss_samples: list[float] = []

    def create(doc: dict[str, Any]) -> None:
        api.create(doc)
        created[doc["metadata"]["name"]] = time.monotonic()

    print(f"{kind.kind}: creating {len(docs)} ...", flush=True)
    t0 = time.monotonic()
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        for future in [pool.submit(create, d) for d in docs]:
            future.result()
    created_s = time.monotonic() - t0
    deadline = t0 + timeout
    next_report = time.monotonic() + 10
    while watch.count() < len(docs) and time.monotonic() < deadline:
        rss = operator.rss_mb()
        if rss is not None:
            rss_samples.append(rss)
        if time.monotonic() >= next_report:
            print(
                f"  {watch.count()}/{len(docs)} with a status after {time.monotonic() - t0:.0f} s"
            )
            next_report += 10
        time.sleep(0.5)
    with watch.lock:
        seen, phases = dict(watch.seen), dict(watch.phases)
    all_status_s = (max(seen.values()) - t0) if len(seen) == len(docs) else None
    delays = [seen[n] - created[n] for n in seen if n in created]
    time.sleep(1)  # reconciles still in flight (e.g. a second write) land in the counts
    rss = operator.rss_mb()
    metrics_after = operator.metrics()

    def delta(name: str) -> float:
        return metrics_after.get(name, 0.0) - metrics_before.get(name, 0.0)

    reconciles = delta("kerasop_reconcile_total")
    duration_sum = delta("kerasop_reconcile_duration_seconds_sum")
    return {
        "kind": kind.kind,
        "objects": len(docs),
        "create_s": round(created_s, 2),
        "create_per_s": round(len(docs) / created_s, 1) if created_s > 0 else None,
        "with_status": len(seen),
        "all_status_s": round(all_status_s, 2) if all_status_s is not None else None,
        "delay_p50_s": round(statistics.median(delays), 3) if delays else None,
        "delay_p99_s": round(percentile(delays, 0.99), 3) if delays else None,
        "phases": {p: list(phases.values()).count(p) for p in sorted(set(phases.values()))},
        "reconciles": int(reconciles),
        "reconcile_mean_ms": round(1000 * duration_sum / reconciles, 1) if reconciles else None,
        "reconciles_by_trigger": {
            name.split(":", 1)[1]: int(delta(name))
            for name in sorted(metrics_after)
            if name.startswith("kerasop_reconcile_total:") and delta(name)
        },
        "reconcile_errors": int(delta("kerasop_reconcile_errors_total")),
        "error_log_lines": operator.errors_logged_since(mark),
        "status_writes": int(delta("kerasop_status_writes_total")),
        "child_writes": int(delta("kerasop_child_writes_total")),
        "rss_mb_last": round(rss, 1) if rss is not None else None,
        "rss_mb_peak": (round(max([*rss_samples, rss]), 1) if rss is not None else None),
    }


# --------------------------------------------------------------------------------------------
# the run


def measure_restart(operator: LocalOperator, objects: int, timeout: float) -> dict[str, Any]:
    """Restart the operator: seconds until it has resumed every object (each one reconciled
    again, none in flight), with its reconciles, errors and memory meanwhile."""
    operator.stop()
    mark = operator.log_mark()
    operator.rss_peak = 0.0
    print(f"restart: resuming {objects} objects ...", flush=True)
    t0 = time.monotonic()
    operator.start()
    deadline, settled_at, m = t0 + timeout, None, {}
    while time.monotonic() < deadline:
        operator.rss_mb()
        m = operator.metrics()
        started = m.get("kerasop_reconcile_total", 0.0)
        finished = m.get("kerasop_reconcile_duration_seconds_count", 0.0)
        if started >= objects and started == finished:
            settled_at = settled_at or time.monotonic()
            if time.monotonic() - settled_at >= 2:  # nothing new started meanwhile
                break
        else:
            settled_at = None
        time.sleep(0.5)
    reconciles = m.get("kerasop_reconcile_total", 0.0)
    return {
        "kind": "restart (resume all)",
        "objects": objects,
        "settled_s": round(settled_at - t0, 2) if settled_at else None,
        "reconciles": int(reconciles),
        "reconcile_mean_ms": (
            round(1000 * m.get("kerasop_reconcile_duration_seconds_sum", 0.0) / reconciles, 1)
            if reconciles
            else None
        ),
        "reconcile_errors": int(m.get("kerasop_reconcile_errors_total", 0.0)),
        "error_log_lines": operator.errors_logged_since(mark),
        "status_writes": int(m.get("kerasop_status_writes_total", 0.0)),
        "child_writes": int(m.get("kerasop_child_writes_total", 0.0)),
        "rss_mb_peak": round(operator.rss_peak_mb() or 0, 1) or None,
    }


def cleanup(api: Kube, client: lightkube.Client, namespace: str, wait: float) -> None:
    """Delete the objects (the operator removes its finalizers), then the namespace."""
    for kind in (k.MODEL_SERVICE, k.TRAINING_JOB):
        try:
            client.deletecollection(kind.res, namespace=namespace)
        except lightkube.ApiError as exc:
            print(f"  cleanup of {kind.kind}: {exc}")
    deadline, left = time.monotonic() + wait, -1
    while time.monotonic() < deadline:
        try:
            left = sum(len(api.list(kind, namespace)) for kind in (k.MODEL_SERVICE, k.TRAINING_JOB))
        except Exception as exc:  # a busy API server dropping one list: ask again
            print(f"  (listing what is left: {type(exc).__name__})")
        if left == 0:
            break
        time.sleep(1)
    else:
        print(f"  {left} objects still there after {wait:.0f} s (finalizers)")
    api.delete(k.NAMESPACE, None, namespace)


def run(args: argparse.Namespace) -> dict[str, Any]:
    kubeconfig = os.environ.get("KUBECONFIG")
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    client = lightkube.Client(config, field_manager="kerasop-bench", timeout=60)  # type: ignore[arg-type]
    api = Kube(client)
    namespace = args.namespace or f"kerasop-scale-{os.getpid()}"
    logdir = Path(tempfile.mkdtemp(prefix="kerasop-scale-"))
    operator: LocalOperator | ClusterOperator
    if args.operator == "local":
        operator = LocalOperator(namespace, args.runtime_image, logdir)
    else:
        operator = ClusterOperator(
            kubectl_runner(kubeconfig), args.operator_namespace, args.operator_metrics_port
        )
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    results: list[dict[str, Any]] = []
    restart: dict[str, Any] | None = None
    try:
        operator.start()
        jobs = [training_job(f"job-{i}", namespace) for i in range(args.jobs)]
        if jobs:
            results.append(
                measure_kind(api, client, operator, k.TRAINING_JOB, jobs, namespace, args.timeout)
            )
        services = [
            model_service(f"svc-{i}", namespace, f"job-{i % args.jobs}" if args.jobs else "none")
            for i in range(args.services)
        ]
        if services:
            results.append(
                measure_kind(
                    api, client, operator, k.MODEL_SERVICE, services, namespace, args.timeout
                )
            )
        if isinstance(operator, LocalOperator) and not args.no_restart:
            restart = measure_restart(operator, args.jobs + args.services, args.timeout)
        result = {
            "meta": {
                "operator": operator.where,
                "server": str(client.config.cluster.server),
                "namespace": namespace,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "kinds": results,
            "restart": restart,
        }
        publish(result, args)  # before the clean-up, which takes a while at 1000 objects
        print("cleaning up ...", flush=True)
        cleanup(api, client, namespace, wait=args.timeout)
    finally:
        operator.stop()
        if args.operator == "local" and not args.keep_logs:
            shutil.rmtree(logdir, ignore_errors=True)
        elif args.operator == "local":
            print(f"operator log: {logdir / 'operator.log'}")
    return result


def print_table(result: dict[str, Any]) -> None:
    cols = [
        ("kind", "kind", 18), ("objects", "objects", 8), ("create s", "create_s", 9),
        ("all status s", "all_status_s", 13), ("p50 s", "delay_p50_s", 7),
        ("p99 s", "delay_p99_s", 7), ("reconciles", "reconciles", 11),
        ("mean ms", "reconcile_mean_ms", 8), ("errors", "reconcile_errors", 7),
        ("err lines", "error_log_lines", 10), ("RSS MB peak", "rss_mb_peak", 12),
    ]  # fmt: skip
    print(f"\noperator: {result['meta']['operator']}  (p50/p99: create answered -> status seen)")
    print(" ".join(f"{title:>{w}}" for title, _, w in cols))
    for row in result["kinds"]:
        cells = [row.get(key) for _, key, _ in cols]
        print(
            " ".join(
                f"{'n/a' if v is None else v!s:>{w}}"
                for v, (_, _, w) in zip(cells, cols, strict=True)
            )
        )
    r = result.get("restart")
    if r:
        print(
            f"restart: {r['objects']} objects resumed in {r['settled_s']} s ({r['reconciles']}"
            f" reconciles, mean {r['reconcile_mean_ms']} ms, {r['reconcile_errors']} errors,"
            f" {r['error_log_lines']} error lines, RSS peak {r['rss_mb_peak']} MB)"
        )


def plot(result: dict[str, Any], target: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    rows = result["kinds"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [f"{r['objects']} {r['kind']}" for r in rows]
    axes[0].bar(labels, [r["create_s"] for r in rows], label="all created")
    axes[0].bar(
        labels, [(r["all_status_s"] or 0) - r["create_s"] for r in rows],
        bottom=[r["create_s"] for r in rows], label="until all have a status",
    )  # fmt: skip
    axes[0].set_ylabel("seconds from the first create")
    axes[0].legend(fontsize=8)
    axes[1].bar(labels, [r["rss_mb_peak"] or 0 for r in rows])
    axes[1].axhline(200, color="red", linestyle="--", linewidth=1, label="goal 200 MB")
    axes[1].set_ylabel("operator RSS peak (MB)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"operator at scale ({result['meta']['operator']})")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="KerasTrainingJobs to create")
    p.add_argument("--services", type=int, default=200, help="KerasModelServices to create")
    p.add_argument("--operator", choices=["local", "cluster"], default="local")
    p.add_argument("--operator-namespace", default="kerasop-system", help="with --operator cluster")
    p.add_argument(
        "--operator-metrics-port", type=int, default=9090, help="with --operator cluster"
    )
    p.add_argument("--runtime-image", default="kerasop-runtime:0.1.0", help="the local operator's")
    p.add_argument("--namespace", help="namespace to create (default kerasop-scale-<pid>)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for each kind")
    p.add_argument("--quick", action="store_true", help="20 jobs, 5 services")
    p.add_argument(
        "--no-restart", action="store_true", help="skip the restart (local operator only)"
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the local operator's log")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.services = min(args.jobs, 20), min(args.services, 5)
    return args


def publish(result: dict[str, Any], args: argparse.Namespace) -> None:
    """The table on stdout, the JSON and the plot under ``args.out``."""
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "operator_scale_quick" if args.quick else "operator_scale"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    plotted = plot(result, args.out / f"{stem}.png")
    print(f"\nwrote {args.out / (stem + '.json')}" + (f" and {stem}.png" if plotted else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    complete = all(r["with_status"] == r["objects"] for r in result["kinds"])
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
