"""Scenario b3: a real Prometheus scrapes the operator and a model server through the chart's
monitor objects, loads the chart's alert rules, and every dashboard query returns data.

Prometheus (built from the Go module github.com/prometheus/prometheus by
cluster/build-prometheus.sh, the same build as the chart tier's promtool) runs as a process on
the test host, not as a pod: no image to build and load, and Kubernetes service discovery
(``kubernetes_sd_configs``) talks to the cluster's API server with the suite's kubeconfig. It
scrapes pod IPs, so the host must reach the pod network: cluster/kind/up.sh routes the pod and
Service ranges from the host through the kind nodes (docs/monitoring.md).

No Prometheus Operator runs: its ServiceMonitor/PodMonitor translation is done by
tests/support/prometheus.py on the objects ``helm template`` renders for the installed release,
so the selectors, ports, paths, honorLabels and relabelings are the chart's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHART, DENSE, E2E, OPERATOR_NAMESPACE, exec_json
from e2ekit import wait_for

from tests.support.prometheus import (
    ALL_ON,
    PrometheusServer,
    alert_names,
    dashboard_panels,
    grafana_expr,
    prometheus_config,
    rule_groups,
    running_prometheus,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SCRAPE = "5s"  # the monitors' interval for this test (the chart's defaults are 30s / 15s)
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval is at a 5s scrape interval, rounded up
# Queries that count failures: they have data only once something failed. The test provokes a
# 4xx (predict_check's malformed request) but no 5xx and no reconcile error.
FAILURE_ONLY = ('code=~"5.."', "kerasop_reconcile_errors_total")


@pytest.fixture
def prometheus(operator: E2E, tmp_path: Path) -> Iterator[PrometheusServer]:
    """Prometheus on 127.0.0.1 scraping what the chart's monitors select (rules loaded)."""
    e2e = operator
    args = [a for s in (*ALL_ON, f"monitoring.serviceMonitor.interval={SCRAPE}",
                        f"monitoring.podMonitor.interval={SCRAPE}") for a in ("--set", s)]  # fmt: skip
    rendered = e2e.helm.run(
        "template", e2e.release, str(CHART), "--namespace", OPERATOR_NAMESPACE, *args
    ).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    config = prometheus_config(objects, e2e.kubectl.kubeconfig, "rules.yaml", interval=SCRAPE)
    with running_prometheus(tmp_path, config, rule_groups(objects)) as prom:
        prom.objects = objects
        yield prom


def test_b3_prometheus_scrapes_through_the_chart_monitors_and_every_panel_has_data(
    data: E2E,
    dense_job: dict,
    dense_service: dict,
    toolbox: str,
    prometheus: PrometheusServer,
    phase,
) -> None:
    e2e, prom = data, prometheus
    version = str(dense_job["status"]["modelVersion"])
    # Serving series: predictions through the Service (v1, v2) and one malformed request (400).
    out = exec_json(
        e2e, "python", "/scripts/predict_check.py", "--host", DENSE, "--model", DENSE,
        "--model-dir", f"/models/{DENSE}/{version}", "--csv", "/data/dense/train.csv",
        "--rows", "4",
    )  # fmt: skip
    assert out["v1_status"] == 200 and out["bad_input"][0] == 400, out
    phase("predictions sent")

    # Both monitors discover their targets and the scrapes succeed.
    def targets_up() -> dict[str, dict[str, Any]] | None:
        active = prom.targets()
        found: dict[str, dict[str, Any]] = {}
        for t in active:
            if t["health"] != "up":
                continue
            labels = t["labels"]
            if t["scrapePool"].startswith("serviceMonitor/") and (
                labels.get("namespace") == OPERATOR_NAMESPACE
            ):
                found["operator"] = t
            if t["scrapePool"].startswith("podMonitor/") and (
                labels.get("namespace") == e2e.namespace and labels.get("model_service") == DENSE
            ):
                found["server"] = t
        return found if len(found) == 2 else None

    def targets_report() -> str:
        active = prom.targets()
        shown = [
            {k: t.get(k) for k in ("scrapePool", "scrapeUrl", "health", "lastError", "labels")}
            for t in active
        ]
        return (
            json.dumps(shown, indent=1)[-6000:]
            + "\n(Prometheus runs on this host and scrapes pod IPs: the host must reach the"
            " pod network)\n" + prom.tail()
        )

    found = wait_for(
        "the operator and the model server scraped (targets up)",
        targets_up,
        timeout=180,
        interval=2,
        diagnose=targets_report,
    )
    server = found["server"]["labels"]
    assert server["model_version"] == version, server  # the PodMonitor's relabelings
    assert found["server"]["scrapeUrl"].endswith(":8080/metrics"), found["server"]
    (metrics_service,) = [
        o["metadata"]["name"]
        for o in prom.objects
        if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    ]
    assert found["operator"]["labels"]["job"] == metrics_service, found["operator"]
    phase("targets up")

    # The chart's alert rules are loaded and evaluate without errors.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        evaluated = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if rules and evaluated else None

    rules = wait_for("the alert rules evaluated", rules_evaluated, timeout=60, interval=2)
    assert {r["name"] for r in rules} == alert_names(rule_groups(prom.objects)), rules
    for r in rules:
        assert r["health"] == "ok" and not r.get("lastError"), r

    # Every dashboard query returns data (the failure-only ones: they run, see FAILURE_ONLY).
    panels = [(title, grafana_expr(q, namespace=e2e.namespace, rate_interval=RATE_INTERVAL))
              for title, q in dashboard_panels()]  # fmt: skip
    must_have_data = [(t, q) for t, q in panels if not any(f in q for f in FAILURE_ONLY)]
    assert len(must_have_data) >= 15, panels
    empty: list[tuple[str, str]] = []

    def all_have_data() -> bool:
        empty[:] = [(t, q) for t, q in must_have_data if not prom.query(q)]
        return not empty

    wait_for(
        "every dashboard query returns data",
        all_have_data,
        timeout=180,
        interval=5,
        diagnose=lambda: "no data:\n" + "\n".join(f"  {t}: {q}" for t, q in empty),
    )
    for _, q in panels:  # the failure-only ones are valid queries too
        prom.query(q)
    # The namespace variable lists the test namespace; the request-rate panel shows the service.
    (ns_var,) = [q for t, q in panels if t == "$namespace"]
    assert e2e.namespace in {s["metric"].get("namespace") for s in prom.query(ns_var)}
    (rate,) = [q for t, q in panels if t == "Request rate"]
    assert {s["metric"].get("model_service") for s in prom.query(rate)} == {DENSE}
    (four_xx,) = [q for t, q in panels if t == "Errors per model version" and '"4.."' in q]
    assert "400" in {s["metric"].get("code") for s in prom.query(four_xx)}
    phase("every dashboard query has data")
