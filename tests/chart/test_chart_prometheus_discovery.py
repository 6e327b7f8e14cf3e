"""A real Prometheus discovers scrape targets through the chart's ServiceMonitor and PodMonitor,
against a real kube-apiserver (the component tier: no kubelet, no pod network).

The objects it discovers are the ones the chart and the operator create: the chart's metrics
Service (rendered by ``helm template``) and a model-server pod built from the operator's own
Deployment template (``kerasop_operator.serving``). With no kubelet, their addresses are written
by the test: an EndpointSlice for the Service and the pod's status (``podIP``), both pointing at
this host, where two HTTP servers (prometheus_client) serve an operator's and a model server's
metrics. Decoys (a Service and a pod without the chart's labels, the same port names) must not
be scraped. The scrape configuration is tests/support/prometheus.py's translation of the
monitors (the e2e scenario b3 runs the same one on a real cluster).
"""

from __future__ import annotations

import copy
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.support.prometheus import (
    ALL_ON,
    CHART,
    dashboard_panels,
    grafana_expr,
    prometheus_config,
    rule_groups,
    running_prometheus,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.component, pytest.mark.prometheus]

OPS = "prom-ops"  # the release namespace (names of its own, beside test_chart_apiserver's)
TEAM = "prom-team"  # where the model service runs


def host_ip() -> str:
    """A non-loopback address of this host (the API server refuses loopback endpoints)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
        return s.getsockname()[0]


def metrics_server(registry: CollectorRegistry) -> Iterator[int]:
    httpd, thread = start_http_server(0, addr="0.0.0.0", registry=registry)
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def operator_port() -> Iterator[int]:
    """The operator's /metrics: a training job of ``TEAM`` in phase Failed (the gauges carry
    the job's namespace; honorLabels keeps it)."""
    registry = CollectorRegistry()
    phase = Gauge(
        "kerasop_training_job_phase", "phase", ["namespace", "name", "phase"], registry=registry
    )
    phase.labels(TEAM, "bad-data", "Failed").set(1)
    yield from metrics_server(registry)


@pytest.fixture
def server_port() -> Iterator[int]:
    registry = CollectorRegistry()
    Gauge("kerasop_server_model_ready", "ready", ["model"], registry=registry).labels("m").set(1)
    # The real server's request counter: its own `endpoint` label names the API called.
    requests = Counter(
        "kerasop_server_requests", "requests", ["endpoint", "code"], registry=registry
    )
    requests.labels("v1_predict", "200").inc(3)
    yield from metrics_server(registry)


def apply(kube, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def set_pod_ip(kube, namespace: str, name: str, ip: str) -> None:
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip}}
    kube.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump(status),
    )


def server_pod(ip_port: int) -> dict[str, Any]:
    """A pod as the operator's Deployment template makes it (its container port, named
    ``http``, moved to where this test's server listens)."""
    from kerasop_operator import serving

    body = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {"name": "svc", "namespace": TEAM, "uid": "u1"},
        "spec": {"model": {"name": "m", "claimName": "models"}},
    }
    ref = serving.ModelRef("m", "models", 3, "claim models")
    template = serving.desired_children(body, ref, default_image="img").deployment["spec"][
        "template"
    ]
    (container,) = template["spec"]["containers"]
    for port in container["ports"]:
        if port["name"] == "http":
            port["containerPort"] = ip_port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        container.pop(probe, None)  # they name the port's old number
    meta = {**template["metadata"], "name": "svc-server-abc", "namespace": TEAM}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


def test_prometheus_scrapes_what_the_chart_monitors_select(
    kube, helm, tmp_path, operator_port, server_port
):
    ip = host_ip()
    sets = (*ALL_ON, "monitoring.serviceMonitor.interval=1s", "monitoring.podMonitor.interval=1s")
    objects = [
        d
        for d in yaml.safe_load_all(
            helm.run(
                "template",
                "kerasop",
                str(CHART),
                "--namespace",
                OPS,
                *[a for s in sets for a in ("--set", s)],
            ).stdout
        )
        if d
    ]
    for ns in (OPS, TEAM):
        kube.kubectl("create", "namespace", ns)
    # The chart's metrics Service, its endpoints on this host; a decoy without its labels.
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    ]
    decoy = copy.deepcopy(service)
    decoy["metadata"] = {"name": "decoy-metrics", "namespace": OPS, "labels": {"app": "decoy"}}
    apply(kube, service, decoy)
    for svc in (service, decoy):
        (port,) = svc["spec"]["ports"]
        apply(
            kube,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc['metadata']['name']}-test",
                    "namespace": OPS,
                    "labels": {
                        "kubernetes.io/service-name": svc["metadata"]["name"],
                        "endpointslice.kubernetes.io/managed-by": "kerasop-tests",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                "ports": [{"name": port["name"], "port": operator_port, "protocol": "TCP"}],
            },
        )

    # A model-server pod as the operator makes it, and a decoy pod with the same port name.
    pod = server_pod(server_port)
    other = copy.deepcopy(pod)
    other["metadata"] = {"name": "not-a-server", "namespace": TEAM, "labels": {"app": "x"}}
    kube.kubectl("create", "serviceaccount", pod["spec"]["serviceAccountName"], "-n", TEAM)
    apply(kube, pod, other)
    for p in (pod, other):
        set_pod_ip(kube, TEAM, p["metadata"]["name"], ip)

    config = prometheus_config(objects, str(kube.kubeconfig), "rules.yaml", interval="1s")
    with running_prometheus(tmp_path, config, rule_groups(objects)) as prom:

        def both_up() -> list[dict[str, Any]] | None:
            targets = prom.targets()
            return (
                targets if len(targets) == 2 and all(t["health"] == "up" for t in targets) else None
            )

        targets = wait_for(
            "two targets up",
            both_up,
            timeout=60,
            interval=0.5,
            diagnose=lambda: f"{prom.targets()}\n{prom.tail()}",
        )
        by_pool = {t["scrapePool"].split("/")[0]: t for t in targets}
        operator, server = by_pool["serviceMonitor"], by_pool["podMonitor"]
        want = {
            "namespace": OPS,
            "service": service["metadata"]["name"],
            "job": service["metadata"]["name"],
            "endpoint": "metrics",
        }
        assert want.items() <= operator["labels"].items(), operator["labels"]
        assert operator["scrapeUrl"] == f"http://{ip}:{operator_port}/metrics"
        labels = server["labels"]
        assert labels["namespace"] == TEAM and labels["pod"] == "svc-server-abc", labels
        assert labels["model_service"] == "svc" and labels["model_version"] == "3", labels
        assert labels["job"] == f"{OPS}/kerasop-keras-operator-model-servers", labels
        assert server["scrapeUrl"] == f"http://{ip}:{server_port}/metrics"

        # honorLabels: the training gauge keeps the job's namespace, not the operator's.
        def scraped() -> list[dict[str, Any]] | None:
            return prom.query('kerasop_training_job_phase{phase="Failed"}') or None

        (series,) = wait_for("the operator's gauge scraped", scraped, timeout=30)
        assert series["metric"]["namespace"] == TEAM and series["metric"]["name"] == "bad-data"
        # The server's own `endpoint` label survives (the dashboard's request panels filter
        # on it), not the PodMonitor target's port name.
        (served,) = wait_for(
            "the server's request counter scraped",
            lambda: prom.query("kerasop_server_requests_total") or None,
            timeout=30,
        )
        assert served["metric"]["endpoint"] == "v1_predict", served["metric"]
        assert served["metric"]["model_service"] == "svc", served["metric"]
        # The dashboard's namespace variable lists TEAM (from both targets).
        (ns_query,) = [q for t, q in dashboard_panels() if t == "$namespace"]
        found = wait_for(
            "both series under the namespace variable",
            lambda: (
                len(prom.query(grafana_expr(ns_query))) == 2 and prom.query(grafana_expr(ns_query))
            ),
            timeout=30,
        )
        assert {s["metric"]["namespace"] for s in found} == {TEAM}, found
        # The chart's alert rule sees the failed job (pending: its for: 1m has not passed).
        alerts = wait_for(
            "KerasTrainingJobFailed pending",
            lambda: [
                a
                for a in prom.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "KerasTrainingJobFailed"
            ],
            timeout=30,
        )
        assert alerts[0]["labels"]["namespace"] == TEAM and alerts[0]["state"] == "pending"
        assert re.search(r"bad-data failed$", alerts[0]["annotations"]["summary"])
