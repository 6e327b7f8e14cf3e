"""Scenario b2: the chart's NetworkPolicy set, enforced.

The policies are rendered from the chart for this namespace (``networkPolicy.enabled``, the
API server's endpoint from its EndpointSlice) and applied for the length of the scenario:

- a model server takes connections from its own namespace and from an allowed one, and none
  from another namespace;
- the operator, under its own policy, still opens connections to the API server and to the
  servers' port (rollouts read their /metrics), and to nothing else;
- two trainer workers, which may reach only each other and the cluster DNS, still train one
  model together (the coordinator's address comes from DNS, the collectives go pod to pod).

Needs a CNI or agent that enforces NetworkPolicy: the kind cluster of ``make e2e`` runs
kube-router (built from its Go module) as its CNI, firewall on (cluster/kind/README.md). Without
enforcement the denied connection gets through and the scenario fails saying so.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import CHART, DENSE, E2E, OPERATOR_NAMESPACE, TOOLBOX, new_job
from e2ekit import LABEL_MODEL_SERVICE, runtime_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

WORKERS = "np-workers"
CLIENT = "np-client"

# Opens a TCP connection to each HOST:PORT argument; one line per target, OPEN or BLOCKED.
PROBE = (
    "import socket, sys\n"
    "for target in sys.argv[1:]:\n"
    "    host, port = target.rsplit(':', 1)\n"
    "    try:\n"
    "        socket.create_connection((host, int(port)), timeout=3).close(); print(target, 'OPEN')\n"
    "    except OSError as exc:\n"
    "        print(target, 'BLOCKED', type(exc).__name__)\n"
)


def _states(output: str) -> dict[str, str]:
    return {parts[0]: parts[1] for line in output.splitlines() if len(parts := line.split()) >= 2}


def start_client(e2e: E2E, namespace: str) -> None:
    """A long-running pod in ``namespace`` to connect from. Policy agents learn a new pod's
    address a moment after it starts, so a pod that connects at once may be refused even
    from an allowed namespace: the probes run from a pod that is already there."""
    other = dataclasses.replace(e2e, namespace=namespace)
    pod = runtime_pod(CLIENT, e2e.runtime_image, ["/usr/bin/tini", "--", "sleep", "infinity"])
    e2e.kubectl.create(pod, namespace)
    other.wait_pod_ready(CLIENT)


def until(e2e: E2E, what: str, pod: str, namespace: str, wanted: dict[str, str]) -> None:
    """Probe from ``pod`` until each target is in its ``wanted`` state (policies apply
    asynchronously); a timeout shows the last probe."""
    seen: list[dict[str, str]] = []
    wait_for(
        f"{what}: {wanted}",
        lambda: seen.append(probe_from_pod(e2e, pod, namespace, *wanted)) or seen[-1] == wanted,
        timeout=120,
        interval=2,
        diagnose=lambda: f"last probe: {seen[-1] if seen else None}",
    )


def probe_from_pod(e2e: E2E, pod: str, namespace: str, *targets: str) -> dict[str, str]:
    res = e2e.kubectl.exec(pod, namespace, "python3", "-c", PROBE, *targets, timeout=60)
    return _states(res.stdout)


def test_b2_network_policies_allow_only_the_documented_traffic(
    data: E2E, dense_service: dict, toolbox: str, phase
) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    allowed, denied = f"{ns}-np-allowed", f"{ns}-np-denied"

    slices = k.list("endpointslices", "default", "kubernetes.io/service-name=kubernetes")
    api_ips = sorted({a for s in slices for ep in s["endpoints"] for a in ep["addresses"]})
    api_ports = sorted({p["port"] for s in slices for p in s.get("ports") or []})
    assert api_ips and api_ports, slices
    rendered = e2e.helm.run(
        "template", e2e.release, str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "--show-only", "templates/networkpolicy.yaml",
        "--set", "networkPolicy.enabled=true",
        "--set", "networkPolicy.apiServer.cidrs={" + ",".join(f"{ip}/32" for ip in api_ips) + "}",
        "--set", "networkPolicy.apiServer.ports={" + ",".join(map(str, api_ports)) + "}",
        "--set", f"networkPolicy.namespaces={{{ns}}}",
        "--set", f"networkPolicy.servers.allowedNamespaces={{{allowed}}}",
    ).stdout  # fmt: skip
    assert rendered.count("kind: NetworkPolicy") == 3, rendered

    service = k.get("service", DENSE, ns)["spec"]
    server = f"{service['clusterIP']}:{service['ports'][0]['port']}"
    server_pod_ip = k.list("pods", ns, f"{LABEL_MODEL_SERVICE}={DENSE}")[0]["status"]["podIP"]
    dns_pod_ip = k.list("pods", "kube-system", "k8s-app=kube-dns")[0]["status"]["podIP"]
    (operator_pod,) = [p["metadata"]["name"] for p in e2e.operator_pods()]

    for name in (allowed, denied):
        k.run("create", "namespace", name)
    try:
        for name in (allowed, denied):
            start_client(e2e, name)
        # Before the policies, the server takes the denied namespace's connection too: the
        # refusal below is the policy's doing, not a wrong address.
        until(
            e2e, f"the server to accept {denied} (no policy yet)", CLIENT, denied, {server: "OPEN"}
        )
        phase("client pods running, server reachable from both")
        k.run("apply", "-f", "-", input=rendered)
        phase("policies applied")

        until(
            e2e,
            f"a connection from namespace {denied} to the model server to be refused"
            " (is NetworkPolicy enforced? make e2e's kind cluster runs kube-router's firewall)",
            CLIENT,
            denied,
            {server: "BLOCKED"},
        )
        phase("denied namespace refused")
        until(e2e, f"the server to accept {allowed}", CLIENT, allowed, {server: "OPEN"})
        assert probe_from_pod(e2e, TOOLBOX, ns, server) == {server: "OPEN"}
        phase("own and allowed namespaces served")

        api = f"{api_ips[0]}:{api_ports[0]}"
        metrics = f"{server_pod_ip}:8080"
        dns = f"{dns_pod_ip}:53"
        until(
            e2e,
            "the operator to reach only the API server and the servers' port",
            operator_pod,
            OPERATOR_NAMESPACE,
            {api: "OPEN", metrics: "OPEN", dns: "BLOCKED"},
        )
        phase("operator: API server and servers' port only")

        k.apply(new_job(WORKERS, epochs=1, workers=2), ns)
        done = e2e.wait_job_phase(WORKERS, "Succeeded", timeout=900)
        assert done["status"]["workers"]["succeeded"] == 2, done["status"]
        phase("2-worker job trained under the trainers' policy")
    finally:
        k.run("delete", "kerastrainingjob", WORKERS, "-n", ns, "--ignore-not-found", check=False)
        k.run("delete", "-f", "-", "--ignore-not-found", input=rendered, check=False)
        for name in (allowed, denied):
            k.run("delete", "namespace", name, "--wait=false", check=False)
