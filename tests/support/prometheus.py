"""Prometheus for the monitoring tests: the binaries, the chart's dashboard queries and rules,
and the scrape configuration the Prometheus Operator would generate from the chart's
ServiceMonitor and PodMonitor.

Binaries: ``promtool`` and ``prometheus`` come from ``cluster/build-prometheus.sh`` (built from
the Go module github.com/prometheus/prometheus on demand, cached in
``${KERASOP_CACHE:-~/.cache/kerasop}/prometheus/<version>/bin``; ``make tools`` builds them).

:func:`scrape_configs` turns the monitor objects into ``kubernetes_sd_configs`` scrape jobs the
way the Prometheus Operator does (its generated config keeps targets by the monitor's label
selector and port name, sets ``namespace``/``pod``/``container``/``service``/``job``/``endpoint``
and then applies the monitor's own relabelings), so the selectors, ports, paths, intervals,
``honorLabels`` and relabelings used are the chart's own, not a hand-written copy of them.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "keras-operator"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
BUILD_SCRIPT = REPO / "cluster" / "build-prometheus.sh"

# Every monitoring object of the chart on (docs/monitoring.md).
ALL_ON = (
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.grafanaDashboard.enabled=true",
)


def binaries() -> Path:
    """The bin directory holding promtool and prometheus (built now if not cached yet)."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=3600, check=False
    )
    assert proc.returncode == 0, "cluster/build-prometheus.sh failed (its log is above)"
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    for name in ("promtool", "prometheus"):
        assert (bindir / name).is_file(), bindir / name
    return bindir


# ---- the dashboard ------------------------------------------------------------------------


def dashboard_panels() -> list[tuple[str, str]]:
    """(where, query) for every panel target and query variable of the dashboard, Grafana
    variables left in."""
    board = json.loads(DASHBOARD.read_text())
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    # Grafana's label_values(<series selector>, <label>): the selector is PromQL.
    found += [
        (f"${v['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["query"]["query"]))
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard, Grafana variables left in."""
    return [q for _, q in dashboard_panels()]


def grafana_expr(expr: str, *, namespace: str = ".*", rate_interval: str = "1m") -> str:
    """The query as Grafana sends it: ``$namespace`` (a regex, "All" is ``.*``) and
    ``$__rate_interval`` replaced."""
    return expr.replace("$__rate_interval", rate_interval).replace("$namespace", namespace)


# ---- the rules ----------------------------------------------------------------------------


def rule_groups(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The rendered PrometheusRule's spec: a Prometheus rule file (``groups:``)."""
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    return rule["spec"]


def alert_names(groups: dict[str, Any]) -> set[str]:
    return {r["alert"] for g in groups["groups"] for r in g["rules"] if "alert" in r}


# ---- scrape configuration from ServiceMonitor / PodMonitor ---------------------------------


def _label_name(key: str) -> str:
    """How Prometheus's Kubernetes SD names a Kubernetes label in ``__meta_*`` labels."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def _keep_selector(kind: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
    if selector.get("matchExpressions"):
        raise NotImplementedError("matchExpressions in a monitor selector")
    return [
        {
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_{kind}_label_{_label_name(k)}",
                f"__meta_kubernetes_{kind}_labelpresent_{_label_name(k)}",
            ],
            "regex": f"({re.escape(v)});true",
        }
        for k, v in sorted(selector.get("matchLabels", {}).items())
    ]


def _namespaces(monitor: dict[str, Any]) -> dict[str, Any]:
    sel = monitor["spec"].get("namespaceSelector") or {}
    if sel.get("any"):
        return {}
    names = sel.get("matchNames") or [monitor["metadata"]["namespace"]]
    return {"namespaces": {"names": names}}


def _relabelings(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in endpoint.get("relabelings") or []:
        rule = {}
        for key, value in r.items():
            snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
            rule[snake] = value
        out.append(rule)
    return out


def _common(endpoint: dict[str, Any], kind: str, sd: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kubernetes_sd_configs": [sd],
        "metrics_path": endpoint.get("path", "/metrics"),
        "honor_labels": bool(endpoint.get("honorLabels", False)),
    }
    if endpoint.get("interval"):
        config["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scheme"):
        config["scheme"] = endpoint["scheme"]
    return config


def scrape_configs(objects: list[dict[str, Any]], kubeconfig: str) -> list[dict[str, Any]]:
    """One scrape job per endpoint of every ServiceMonitor and PodMonitor in ``objects``."""
    jobs = []
    for mon in objects:
        kind, meta = mon["kind"], mon["metadata"]
        if kind == "ServiceMonitor":
            for i, ep in enumerate(mon["spec"]["endpoints"]):
                sd = {"role": "endpointslice", "kubeconfig_file": kubeconfig, **_namespaces(mon)}
                job = _common(ep, kind, sd)
                job["job_name"] = f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}"
                job["relabel_configs"] = [
                    *_keep_selector("service", mon["spec"].get("selector") or {}),
                    {
                        "action": "keep",
                        "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                        "regex": re.escape(ep["port"]),
                    },
                    *_target_labels(pod_or_node="__meta_kubernetes_endpointslice_address_target"),
                    {
                        "source_labels": ["__meta_kubernetes_service_name"],
                        "target_label": "service",
                    },
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                    {"target_label": "endpoint", "replacement": ep["port"]},
                    *_relabelings(ep),
                ]
                jobs.append(job)
        elif kind == "PodMonitor":
            for i, ep in enumerate(mon["spec"]["podMetricsEndpoints"]):
                sd = {"role": "pod", "kubeconfig_file": kubeconfig, **_namespaces(mon)}
                job = _common(ep, kind, sd)
                job["job_name"] = f"podMonitor/{meta['namespace']}/{meta['name']}/{i}"
                job["relabel_configs"] = [
                    *_keep_selector("pod", mon["spec"].get("selector") or {}),
                    {
                        "action": "keep",
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": re.escape(ep["port"]),
                    },
                    *_target_labels(pod_or_node=None),
                    {
                        "target_label": "job",
                        "replacement": f"{meta['namespace']}/{meta['name']}",
                    },
                    {"target_label": "endpoint", "replacement": ep["port"]},
                    *_relabelings(ep),
                ]
                jobs.append(job)
    return jobs


def _target_labels(pod_or_node: str | None) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    if pod_or_node:
        rules.append(
            {
                "source_labels": [f"{pod_or_node}_kind", f"{pod_or_node}_name"],
                "separator": ";",
                "regex": "Pod;(.*)",
                "target_label": "pod",
            }
        )
    else:
        rules.append({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"})
    rules += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    return rules


def prometheus_config(
    objects: list[dict[str, Any]], kubeconfig: str, rule_file: str, *, interval: str = "5s"
) -> dict[str, Any]:
    """A prometheus.yml scraping what the chart's monitors select and loading its rules."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rule_file],
        "scrape_configs": scrape_configs(objects, kubeconfig),
    }


# ---- a running Prometheus -----------------------------------------------------------------


class PrometheusServer:
    """A ``prometheus`` process on 127.0.0.1 (a free port) and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log
        self.objects: list[dict[str, Any]] = []  # what it was configured from (the caller's)

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, config: dict[str, Any], rules: dict[str, Any]
) -> Iterator[PrometheusServer]:
    """Run ``prometheus`` with ``config`` (its ``rule_files`` naming ``rules.yaml``) in
    ``workdir`` until the block ends; ready when yielded."""
    from tests.support.waiting import wait_for

    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binaries() / "prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    prom = PrometheusServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for("prometheus ready", prom.ready, timeout=60, interval=0.5, diagnose=prom.tail)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
