"""The chart's NetworkPolicy set: rendered objects select the pods the operator really
creates and allow only the documented traffic; the API server accepts them.

Traffic under the policies (enforced by kube-router on the kind cluster) is e2e
scenario b2's (tests/e2e/test_e2e_b2_network_policy.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "keras-operator"
ENABLED = ("networkPolicy.enabled=true", "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
           "watchNamespaces={team-a,team-b}")  # fmt: skip


def policies(helm, *extra: str) -> dict[tuple[str, str], dict]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in helm.objects(*ENABLED, *extra)
        if o["kind"] == "NetworkPolicy"
    }


def operator_pod_template(helm) -> dict:
    return next(o for o in helm.objects(*ENABLED) if o["kind"] == "Deployment")["spec"]["template"]


def server_pod_template() -> dict:
    from kerasop_operator import serving

    body = {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasModelService",
            "metadata": {"name": "svc", "namespace": "team-a", "uid": "u1"},
            "spec": {"model": {"name": "m", "claimName": "models"}}}  # fmt: skip
    ref = serving.ModelRef("m", "models", 1, "claim models")
    return serving.desired_children(body, ref, default_image="img").deployment["spec"]["template"]


def trainer_pod_template() -> dict:
    from kerasop_operator import training

    body = {"apiVersion": "kerasop.io/v1alpha1", "kind": "KerasTrainingJob",
            "metadata": {"name": "job", "namespace": "team-a", "uid": "u2"},
            "spec": {"data": {"format": "csv", "path": "d.csv"},
                     "model": {"layers": [{"type": "Dense", "units": 1}]}, "workers": 2}}  # fmt: skip
    children = training.desired_children(body, default_image="img")
    return children.job["spec"]["template"]


def selects(policy: dict, labels: dict) -> bool:
    return policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_no_network_policies_by_default(helm):
    assert not [o for o in helm.objects() if o["kind"] == "NetworkPolicy"]


def test_operator_may_only_reach_the_api_server_and_the_servers_metrics(helm):
    from kerasop_operator import serving

    operator_pod = operator_pod_template(helm)
    policy = policies(helm)[("kerasop-system", "kerasop-keras-operator")]
    assert selects(policy, operator_pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    api_server, servers = policy["spec"]["egress"]
    assert api_server["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in api_server["ports"]} == {443, 6443}
    # The rollout and the ModelStoreReachable condition read http://<server pod>:PORT/metrics
    # (Controller._server_metrics).
    (peer,) = servers["to"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    assert (
        server_pod_template()["metadata"]["labels"].items()
        >= peer["podSelector"]["matchLabels"].items()
    )
    assert servers["ports"] == [{"port": serving.PORT, "protocol": "TCP"}]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_servers_take_calls_on_their_port_from_allowed_namespaces_only(helm):
    template = server_pod_template()
    found = policies(helm, "networkPolicy.servers.allowedNamespaces={monitoring}")
    operator_pod = operator_pod_template(helm)
    operator_labels = found[("kerasop-system", "kerasop-keras-operator")]["spec"]["podSelector"][
        "matchLabels"
    ]
    assert operator_labels.items() <= operator_pod["metadata"]["labels"].items()
    for ns in ("team-a", "team-b"):
        policy = found[(ns, "kerasop-keras-operator-model-servers")]
        assert selects(policy, template["metadata"]["labels"])
        assert not selects(policy, trainer_pod_template()["metadata"]["labels"])
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
        assert [p["port"] for p in rule["ports"]] == ["http", "grpc"]
        assert ports == ["http", "grpc"]  # the container's named ports: OIP gRPC on by default
        operator = {"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "kerasop-system"}},
                    "podSelector": {"matchLabels": operator_labels}}  # fmt: skip
        assert rule["from"] == [
            {"podSelector": {}},
            operator,
            {"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In",
                 "values": ["monitoring"]}]}},
        ]  # fmt: skip


def test_trainer_workers_talk_only_to_each_other_and_dns(helm):
    template = trainer_pod_template()
    policy = policies(helm)[("team-a", "kerasop-keras-operator-trainers")]
    labels = template["metadata"]["labels"]
    assert selects(policy, labels)
    assert not selects(policy, server_pod_template()["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    peer = ingress["from"][0]["podSelector"]["matchLabels"]
    assert peer.items() <= labels.items() and "ports" not in ingress  # collectives use many
    to_workers, to_dns = policy["spec"]["egress"]
    assert to_workers["to"][0]["podSelector"]["matchLabels"] == peer
    assert {(p["port"], p["protocol"]) for p in to_dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_extra_trainer_egress_is_appended(helm):
    rule = "networkPolicy.trainers.extraEgress[0].ports[0].port=443"
    policy = policies(helm, rule)[("team-b", "kerasop-keras-operator-trainers")]
    assert policy["spec"]["egress"][-1] == {"ports": [{"port": 443}]}


def test_missing_settings_fail_with_a_clear_message(helm):
    args = ("template", "r", str(CHART), "--set", "networkPolicy.enabled=true")
    proc = helm.run(*args, check=False)
    assert proc.returncode != 0 and "networkPolicy.apiServer.cidrs" in proc.stderr
    proc = helm.run(*args, "--set", "networkPolicy.apiServer.cidrs={10.0.0.1/32}", check=False)
    assert proc.returncode != 0 and "networkPolicy.namespaces" in proc.stderr
    proc = helm.run(*args, "--set", "networkPolicy.apiServer.cidrs={not-a-cidr}",
                    "--set", "networkPolicy.namespaces={a}", check=False)  # fmt: skip
    assert proc.returncode != 0 and "cidrs" in proc.stderr


@pytest.mark.component
def test_the_api_server_accepts_and_stores_the_policies(kube, helm):
    namespaces = ("np-system", "np-a", "np-b")
    for ns in namespaces:
        kube.kubectl("create", "namespace", ns)
    args = ["template", "kerasop", str(CHART), "--namespace", "np-system",
            "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
            "--set", "networkPolicy.namespaces={np-a,np-b}",
            "--set", "networkPolicy.servers.allowedNamespaces={monitoring}"]  # fmt: skip
    rendered = helm.run(*args).stdout
    wanted = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] == "NetworkPolicy"]
    assert len(wanted) == 5  # operator + (servers, trainers) in each namespace
    manifest = yaml.safe_dump_all(wanted)
    proc = kube.kubectl("apply", "--server-side", "--validate=strict", "-f", "-",
                        input=manifest, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for obj in wanted:
        meta = obj["metadata"]
        stored = yaml.safe_load(kube.kubectl("get", "networkpolicy", meta["name"], "-n",
                                             meta["namespace"], "-o", "yaml").stdout)  # fmt: skip
        # Stored as rendered (the API server only adds defaults such as protocol).
        assert stored["spec"]["podSelector"] == obj["spec"]["podSelector"]
        assert stored["spec"]["policyTypes"] == obj["spec"]["policyTypes"]
        assert len(stored["spec"].get("egress", [])) == len(obj["spec"].get("egress", []))
        assert len(stored["spec"].get("ingress", [])) == len(obj["spec"].get("ingress", []))
