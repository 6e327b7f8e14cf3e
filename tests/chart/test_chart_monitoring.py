"""The chart's monitoring objects: off by default, wired to what the operator creates, and
every metric the dashboard and alert rules query is one the code really exports.

Exported names come from the code itself: the registry of a model server's app and the
operator process's Prometheus registry, expanded by metric type as Prometheus scrapes
them (a counter ``x`` is scraped as ``x_total``, a histogram as ``x_bucket``/``_sum``/``_count``).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support.prometheus import ALL_ON, CHART, DASHBOARD, dashboard_queries

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
_CALL_OR_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, label matchers, clauses dropped)."""
    names = {n for m in re.finditer(r'__name__=~"([^"]+)"', expr) for n in m.group(1).split("|")}
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _CALL_OR_CLAUSE.sub(" ", expr)
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", expr):
        word, call = match.groups()
        if not call and word not in ("and", "or", "unless", "bool", "offset"):
            names.add(word)
    return names


def exported(families) -> set[str]:
    return {f.name + s for f in families for s in SUFFIXES[f.type]}


@pytest.fixture(scope="module")
def server_metric_names(tmp_path_factory) -> set[str]:
    """The registry a model server's /metrics renders (the app as kerasop-serve builds it)."""
    from kerasop_server.app import METRICS, create_app
    from kerasop_server.config import ServerConfig

    app = create_app(ServerConfig(store_root=tmp_path_factory.mktemp("s"), model="m", port=0))
    return exported(app[METRICS].registry.collect())


@pytest.fixture(scope="module")
def operator_metric_names() -> set[str]:
    """The registry the operator process serves on --metrics-port."""
    from prometheus_client import REGISTRY

    import kerasop_operator.handlers  # noqa: F401 - registers everything the operator exports

    return exported(REGISTRY.collect())


def rule_queries(helm) -> list[str]:
    rule = next(o for o in helm.objects(*ALL_ON) if o["kind"] == "PrometheusRule")
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_monitoring_is_off_by_default(helm):
    kinds = {o["kind"] for o in helm.objects()}
    assert not kinds & MONITORING_KINDS
    assert not any(o["metadata"]["name"].endswith("-dashboard") for o in helm.objects())


def test_all_monitoring_objects_render_and_lint(helm):
    objs = helm.objects(*ALL_ON, "monitoring.labels.release=prom")
    kinds = [o["kind"] for o in objs]
    assert set(kinds) >= MONITORING_KINDS
    for obj in objs:
        if obj["kind"] in MONITORING_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["metadata"]["labels"]["release"] == "prom"
    helm.run("lint", str(CHART), *[a for s in ALL_ON for a in ("--set", s)])


def test_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar(helm):
    objs = helm.objects("monitoring.grafanaDashboard.enabled=true",
                        "monitoring.grafanaDashboard.namespace=grafana")  # fmt: skip
    cm = next(
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    )
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    assert json.loads(cm["data"]["keras-operator.json"]) == json.loads(DASHBOARD.read_text())


def test_pod_monitor_selects_the_operators_server_pods(helm):
    from kerasop_operator import common, serving

    body = {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasModelService",
            "metadata": {"name": "svc", "namespace": "ns", "uid": "u1"},
            "spec": {"model": {"name": "m", "claimName": "models"}}}  # fmt: skip
    ref = serving.ModelRef("m", "models", 3, "claim models")
    template = serving.desired_children(body, ref, default_image="img").deployment["spec"][
        "template"
    ]
    monitor = next(o for o in helm.objects(*ALL_ON) if o["kind"] == "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}

    def meta(prefix: str, key: str) -> str:  # how Prometheus names pod labels and annotations
        return prefix + re.sub(r"[^A-Za-z0-9_]", "_", key)

    sources = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
    assert sources["model_service"] == meta(
        "__meta_kubernetes_pod_label_", common.LABEL_MODEL_SERVICE
    )
    assert sources["model_version"] == meta(
        "__meta_kubernetes_pod_annotation_", common.ANN_MODEL_VERSION
    )
    assert template["metadata"]["annotations"][common.ANN_MODEL_VERSION] == "3"
    assert common.LABEL_MODEL_SERVICE in template["metadata"]["labels"]


def test_pod_monitor_follows_watch_namespaces(helm):
    objs = helm.objects(*ALL_ON, "watchNamespaces={team-a,team-b}")
    monitor = next(o for o in objs if o["kind"] == "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_service_monitor_scrapes_the_operators_metrics_service(helm):
    objs = helm.objects(*ALL_ON)
    monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
    service = next(
        o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_pod_monitor_keeps_the_servers_endpoint_label(helm):
    (monitor,) = [o for o in helm.objects(*ALL_ON) if o["kind"] == "PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


def test_service_monitor_needs_the_metrics_service(helm):
    proc = helm.run("template", "r", str(CHART), "--set", "monitoring.serviceMonitor.enabled=true",
                    "--set", "metrics.service.enabled=false", check=False)  # fmt: skip
    assert proc.returncode != 0 and "metrics.service.enabled" in proc.stderr


def test_dashboard_covers_training_serving_latency_batches_and_errors():
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    for wanted in ("Training progress", "Request rate", "Latency percentiles", "Batch sizes",
                   "Errors per model version"):  # fmt: skip
        assert wanted in titles


def test_every_queried_metric_is_exported(helm, server_metric_names, operator_metric_names):
    known = server_metric_names | operator_metric_names
    queries = dashboard_queries() + rule_queries(helm)
    used = set().union(*(metric_names(q) for q in queries))
    assert len(used) >= 10, used  # the parser found the queries' metrics
    assert used - known == set()
    # Both sources are really used, and the alert rules read what they alert on.
    assert used & server_metric_names and used & operator_metric_names
    rules = set().union(*(metric_names(q) for q in rule_queries(helm)))
    assert rules == {"kerasop_training_job_phase", "kerasop_server_requests_total"}


def test_the_name_check_catches_a_wrong_name(server_metric_names):
    # The counter is exported as kerasop_server_requests_total, never without the suffix.
    expr = 'sum by (code) (rate(kerasop_server_requests{code=~"5.."}[5m])) / on(pod) up'
    assert metric_names(expr) == {"kerasop_server_requests", "up"}
    assert "kerasop_server_requests" not in server_metric_names
    assert "kerasop_server_requests_total" in server_metric_names
    assert "kerasop_server_request_duration_seconds_bucket" in server_metric_names
