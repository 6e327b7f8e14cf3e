"""Scenario f2: a KerasModelService with ``autoscaling`` scales up under in-cluster load and
back down after it, with zero failed requests.

Needs the metrics API (metrics.k8s.io): the kind cluster of ``make e2e`` runs metrics-server
(built from its Go module, cluster/kind/README.md); elsewhere, install metrics-server. Without
it the scenario fails and says so, like every other missing prerequisite of the suite.
"""

from __future__ import annotations

import json

import pytest
from conftest import DENSE, E2E, LoadGen
from e2ekit import load_example, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NAME = "autoscaled"
MAX_REPLICAS = 3


def metrics_api_available(e2e: E2E) -> bool:
    api = e2e.kubectl.get("apiservice", "v1beta1.metrics.k8s.io")
    conds = ((api or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conds)


def test_f2_hpa_scales_up_under_load_and_down_after_without_failed_requests(
    data: E2E, dense_job: dict, toolbox: str, phase
) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    if not metrics_api_available(e2e):
        pytest.fail(
            "no metrics.k8s.io in this cluster: make e2e's kind cluster runs metrics-server"
            " (cluster/kind/up.sh); elsewhere, install metrics-server",
            pytrace=False,
        )
    svc = load_example("dense-classifier.yaml")["KerasModelService"]
    svc["metadata"] = {"name": NAME}
    # A CPU request that four busy clients push well past 50%, while an idle server (40-60m
    # in this cluster: probes, the store poll) plus the light load below stays under the 25%
    # that scaling 2 -> 1 needs. With 200m an idle pair sat at 40% and never scaled in.
    svc["spec"]["resources"] = {"cpu": "500m", "memory": "1Gi"}
    svc["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": MAX_REPLICAS,
        "targetCpuUtilization": 50,
        "scaleDownStabilizationSeconds": 30,  # the default 300 s would only make it wait
    }
    k.apply(svc, ns)
    try:
        e2e.wait_service_ready(NAME, replicas=1, timeout=600)
        hpa = wait_for(
            f"HPA {NAME} to read the pods' CPU",
            lambda: (
                (h := k.get("horizontalpodautoscaler", NAME, ns))
                and (h.get("status") or {}).get("currentMetrics")
                and h
            ),
            timeout=180,
            interval=5,
        )
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"{NAME}-server", hpa
        phase("service ready, HPA reading metrics")

        with LoadGen(
            e2e, NAME, DENSE, tag="hpa", concurrency=4, interval=0.0, max_seconds=900
        ) as load:
            scaled = wait_for(
                f"{NAME}-server to scale above 1 replica under load",
                lambda: (
                    (d := k.get("deployment", f"{NAME}-server", ns))
                    and (d.get("status") or {}).get("readyReplicas", 0) >= 2
                    and d
                ),
                timeout=420,
                interval=5,
                diagnose=e2e.service_diagnose(NAME),
            )
            up = load.stop()
        phase(f"scaled up to {scaled['status']['readyReplicas']} ready replicas")
        shown = json.dumps({k_: v for k_, v in up.items() if k_ != "latencies"}, indent=1)
        assert up["total"] > 0 and up["failed"] == 0, shown
        st = e2e.service(NAME)["status"]
        assert st["replicas"] >= 2, st  # the scale subresource follows the Deployment

        # A light load while the HPA scales back in (after its 30 s stabilization window):
        # server pods drain before they stop, so no request fails on the way down either.
        with LoadGen(
            e2e, NAME, DENSE, tag="hpa-down", concurrency=1, interval=1.0, max_seconds=900
        ) as load:
            wait_for(
                f"{NAME}-server to scale back to 1 replica",
                lambda: (
                    (d := k.get("deployment", f"{NAME}-server", ns))
                    and d["spec"].get("replicas") == 1
                    and (d.get("status") or {}).get("replicas") == 1
                ),
                timeout=720,
                interval=10,
                diagnose=e2e.service_diagnose(NAME),
            )
            down = load.stop()
        phase("scaled back down to 1 replica")
        shown = json.dumps({k_: v for k_, v in down.items() if k_ != "latencies"}, indent=1)
        assert down["total"] > 0 and down["failed"] == 0, shown
    finally:
        k.run(
            "delete",
            "kerasmodelservice",
            NAME,
            "-n",
            ns,
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=180,
        )
