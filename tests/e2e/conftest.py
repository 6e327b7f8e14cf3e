"""Fixtures of the end-to-end tier: a real cluster (``KUBECONFIG``), the Helm chart, data.

The tier runs only when asked for (``make e2e``, ``pytest -m e2e``, a path under
``tests/e2e``, or ``KERASOP_E2E=1``); otherwise its tests are deselected (pytest reports
them as deselected, with a line saying how to run them). When asked for, nothing is
skipped: a missing ``KUBECONFIG``, an unreachable cluster or images missing on the node
fail the tests with a message that says what to do.

Session set-up, in order (each step is timed and shown in the summary table):

1. check the cluster: reachable, a Ready node, a default StorageClass, both images on
   the nodes (``cluster/kind/load-images.sh`` or ``kind load docker-image`` put them there);
2. ``helm install`` charts/keras-operator into ``kerasop-system`` (pull policy
   IfNotPresent, no registry) and wait for the operator;
3. a test namespace ``kerasop-e2e-<random>`` with a ConfigMap of the in-cluster scripts
   (tests/e2e/incluster) and a PVC ``training-data`` filled by a pod of the runtime image
   running ``kerasop sample-data``.

Teardown deletes what the session made: the test resources, the namespace, the Helm
release (unless scenario h uninstalled it already), the ``kerasop-system`` namespace if the
session created it, and the CRDs if they did not exist before. ``KERASOP_E2E_KEEP=1``
keeps everything for debugging.

Environment: ``KUBECONFIG`` (required), ``KERASOP_E2E_OPERATOR_IMAGE`` /
``KERASOP_E2E_RUNTIME_IMAGE`` (default ``kerasop-operator:0.1.0`` /
``kerasop-runtime:0.1.0``), ``KERASOP_E2E_SERVING_IMAGE`` (default ``kerasop-serving:0.1.0``;
the chart's ``runtime.servingImage`` when it is on every node, empty: off),
``KERASOP_E2E_RELEASE`` (default ``kerasop``),
``KERASOP_E2E_KEEP``, ``KUBECTL`` / ``HELM`` (binaries; default: cluster/get-tools.sh's).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2ekit import (
    CRDS,
    E2E_DIR,
    LABEL_PART_OF,
    LABEL_TRAINING_JOB,
    REPO,
    Diagnostics,
    E2EError,
    Helm,
    Kubectl,
    condition,
    events_in,
    load_example,
    runtime_pod,
    wait_for,
)

CHART = REPO / "charts" / "keras-operator"
OPERATOR_NAMESPACE = "kerasop-system"
DEFAULT_OPERATOR_IMAGE = "kerasop-operator:0.1.0"
DEFAULT_RUNTIME_IMAGE = "kerasop-runtime:0.1.0"
DEFAULT_SERVING_IMAGE = "kerasop-serving:0.1.0"
DATA_CLAIM = "training-data"
SCRIPTS = "e2e-scripts"
TOOLBOX = "e2e-tools"

# ---------------------------------------------------------------------------------------------
# selection: the tier runs only when asked for


_ROOT: list[Path] = [Path.cwd()]


def pytest_configure(config: pytest.Config) -> None:
    _ROOT[0] = Path(config.rootpath)


def _under_e2e(path: Any, base: Path | None = None) -> bool:
    """Is ``path`` (absolute, or relative to ``base``/cwd) inside tests/e2e?"""
    p = Path(str(path))
    if not p.is_absolute() and base is not None:
        p = base / p
    try:
        p.resolve().relative_to(E2E_DIR)
        return True
    except ValueError:
        return False


def _requested(config: pytest.Config) -> bool:
    if os.environ.get("KERASOP_E2E") == "1":
        return True
    markexpr = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ")
    words = markexpr.split()
    for i, word in enumerate(words):
        if word == "e2e" and (i == 0 or words[i - 1] != "not"):
            return True
    return any(_under_e2e(str(arg).split("::", 1)[0]) for arg in config.args)


_DESELECTED: list[int] = [0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if _under_e2e(item.path)]
    for item in mine:
        item.add_marker(pytest.mark.e2e)
    if mine and not _requested(config):
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if not _under_e2e(item.path)]
        _DESELECTED[0] = len(mine)


# ---------------------------------------------------------------------------------------------
# durations table


@dataclass
class _Timing:
    outcome: str = "passed"
    setup: float = 0.0
    call: float = 0.0
    teardown: float = 0.0
    phases: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


TIMINGS: dict[str, _Timing] = {}
SESSION_PHASES: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _under_e2e(report.fspath, _ROOT[0]):
        return
    t = TIMINGS.setdefault(report.nodeid, _Timing())
    setattr(t, report.when, getattr(t, report.when) + report.duration)
    if report.failed:
        t.outcome = "ERROR" if report.when != "call" else "FAILED"
    for name, seconds in getattr(report, "user_properties", []):
        if name.startswith("phase:"):
            if (name[6:], seconds) not in t.phases:
                t.phases.append((name[6:], seconds))
        elif name == "note" and seconds not in t.notes:
            t.notes.append(seconds)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    if _DESELECTED[0] and not TIMINGS:
        tr.write_line(
            f"e2e tier not requested: {_DESELECTED[0]} tests deselected"
            " (run `make e2e` or `pytest -m e2e tests/e2e` with KUBECONFIG set)"
        )
        return
    if not TIMINGS:
        return
    tr.section("e2e scenario durations")
    if SESSION_PHASES:
        tr.write_line("  session set-up (counted in the first test's set-up column):")
        for name, seconds in SESSION_PHASES:
            tr.write_line(f"      {name:<62} {seconds:7.1f}s")
    tr.write_line(f"  {'scenario':<66} {'outcome':<7} {'set-up':>8} {'test':>8} {'total':>8}")
    grand = 0.0
    for nodeid, t in TIMINGS.items():
        name = nodeid.split("::")[-1]
        whole = t.setup + t.call + t.teardown
        grand += whole
        tr.write_line(f"  {name:<66} {t.outcome:<7} {t.setup:7.1f}s {t.call:7.1f}s {whole:7.1f}s")
        for phase_name, seconds in t.phases:
            tr.write_line(f"      {phase_name:<62} {seconds:7.1f}s")
        for note in t.notes:
            tr.write_line(f"      * {note}")
    tr.write_line(f"  {'all scenarios':<66} {'':<7} {'':>8} {'':>8} {grand:7.1f}s")


_CALL_START = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    item.stash[_CALL_START] = time.monotonic()


@pytest.fixture
def phase(request: pytest.FixtureRequest):
    """``phase("name")`` marks the end of a named part of the test body (shown in the table)."""
    last: list[float | None] = [None]

    def mark(name: str) -> None:
        now = time.monotonic()
        start = last[0] if last[0] is not None else request.node.stash.get(_CALL_START, now)
        request.node.user_properties.append((f"phase:{name}", round(now - start, 1)))
        last[0] = now

    def note(text: str) -> None:
        request.node.user_properties.append(("note", text))

    mark.note = note  # type: ignore[attr-defined]
    return mark


def _session_phase(name: str, t0: float) -> float:
    now = time.monotonic()
    SESSION_PHASES.append((name, now - t0))
    return now


# ---------------------------------------------------------------------------------------------
# the cluster


@dataclass
class E2E:
    """Everything a scenario needs: tools, names, images, diagnostics."""

    kubectl: Kubectl
    helm: Helm
    namespace: str
    release: str
    operator_image: str
    runtime_image: str
    node: str
    serving_image: str = ""  # the slim server image, "" when the chart's value is off
    keep: bool = False
    created_operator_namespace: bool = False
    preexisting_crds: set[str] = field(default_factory=set)
    uninstalled: bool = False

    @property
    def diag(self) -> Diagnostics:
        return Diagnostics(self.kubectl, self.namespace, OPERATOR_NAMESPACE)

    # ---- KerasTrainingJob ------------------------------------------------------------------

    def job(self, name: str) -> dict[str, Any] | None:
        return self.kubectl.get("kerastrainingjob", name, self.namespace)

    def job_diagnose(self, name: str):
        return lambda: self.diag.report(
            objects=[("kerastrainingjob", name), ("job.batch", f"{name}-trainer")],
            selectors=[f"{LABEL_TRAINING_JOB}={name}"],
        )

    def wait_job_phase(self, name: str, phase: str, timeout: float = 600) -> dict[str, Any]:
        """Wait until the job reaches ``phase``; stop early on another terminal phase."""
        seen: dict[str, Any] = {}

        def probe():
            seen["obj"] = obj = self.job(name)
            return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None

        def unexpected(_: Any) -> str | None:
            got = ((seen.get("obj") or {}).get("status") or {}).get("phase")
            if got in ("Succeeded", "Failed") and got != phase:
                return f"KerasTrainingJob {name} is {got}, expected {phase}"
            return None

        return wait_for(
            f"KerasTrainingJob {name} phase {phase}",
            probe,
            timeout=timeout,
            interval=3,
            diagnose=self.job_diagnose(name),
            fail_if=unexpected,
        )

    # ---- KerasModelService -----------------------------------------------------------------

    def service(self, name: str) -> dict[str, Any] | None:
        return self.kubectl.get("kerasmodelservice", name, self.namespace)

    def service_diagnose(self, name: str):
        return lambda: self.diag.report(
            objects=[("kerasmodelservice", name), ("deployment", f"{name}-server")],
            selectors=[f"kerasop.io/model-service={name}"],
        )

    def wait_service_ready(
        self,
        name: str,
        *,
        version: int | None = None,
        replicas: int | None = None,
        timeout: float = 600,
    ) -> dict[str, Any]:
        def probe():
            obj = self.service(name) or {}
            st = obj.get("status") or {}
            if st.get("phase") != "Ready" or condition(obj, "Ready").get("status") != "True":
                return None
            if st.get("observedGeneration") != obj["metadata"].get("generation"):
                return None
            if version is not None and st.get("servingVersion") != version:
                return None
            if replicas is not None and st.get("readyReplicas") != replicas:
                return None
            return obj

        what = (
            f"KerasModelService {name} Ready"
            + (f" serving version {version}" if version else "")
            + (f" with {replicas} ready replicas" if replicas else "")
        )
        return wait_for(
            what, probe, timeout=timeout, interval=3, diagnose=self.service_diagnose(name)
        )

    # ---- pods ------------------------------------------------------------------------------

    def run_pod(self, pod: dict[str, Any], timeout: float = 300) -> str:
        """Create a run-to-completion pod, wait for it to succeed, return its log; delete it."""
        name = pod["metadata"]["name"]
        self.kubectl.delete("pod", name, self.namespace, wait=True)
        self.kubectl.create(pod, self.namespace)
        try:

            def done():
                obj = self.kubectl.get("pod", name, self.namespace) or {}
                return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") and obj

            obj = wait_for(
                f"pod {name} to finish",
                done,
                timeout=timeout,
                interval=2,
                diagnose=lambda: self.diag.report(objects=[("pod", name)], operator=False),
            )
            log = self.kubectl.logs(name, self.namespace)
            if obj["status"]["phase"] != "Succeeded":
                pytest.fail(
                    f"pod {name} failed:\n{log[-4000:]}\n"
                    + self.diag.report(objects=[("pod", name)], operator=False),
                    pytrace=False,
                )
            return log
        finally:
            self.kubectl.delete("pod", name, self.namespace)

    def wait_pod_ready(self, name: str, timeout: float = 300) -> dict[str, Any]:
        def ready():
            obj = self.kubectl.get("pod", name, self.namespace) or {}
            return condition(obj, "Ready").get("status") == "True" and obj

        return wait_for(
            f"pod {name} Ready",
            ready,
            timeout=timeout,
            interval=2,
            diagnose=lambda: self.diag.report(objects=[("pod", name)], operator=False),
        )

    def operator_pods(self) -> list[dict[str, Any]]:
        return self.kubectl.list(
            "pods",
            OPERATOR_NAMESPACE,
            f"app.kubernetes.io/component=operator,app.kubernetes.io/instance={self.release}",
        )


def _image_on_node(node: dict[str, Any], image: str) -> bool | None:
    """True/False, or None when the node's image list is truncated (50 entries)."""
    ref = image if "/" in image.split(":")[0] else f"docker.io/library/{image}"
    names = [
        n for img in (node.get("status") or {}).get("images") or [] for n in img.get("names") or []
    ]
    if any(n in (ref, image) or n.endswith("/" + image) for n in names):
        return True
    return None if len((node.get("status") or {}).get("images") or []) >= 50 else False


def untainted(node: dict[str, Any]) -> bool:
    """True when ordinary pods may land on the node (no NoSchedule/NoExecute taint)."""
    taints = (node.get("spec") or {}).get("taints") or []
    return not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)


def _serving_image_values(image: str) -> list[str]:
    if not image:
        return []
    repo, tag = _split_image(image)
    return [
        "--set",
        f"runtime.servingImage.repository={repo}",
        "--set",
        f"runtime.servingImage.tag={tag}",
    ]


def _split_image(image: str) -> tuple[str, str]:
    repo, _, tag = image.rpartition(":")
    if not repo or "/" in tag:
        return image, ""
    return repo, tag


@pytest.fixture(scope="session")
def e2e() -> Iterator[E2E]:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        pytest.fail(
            "KUBECONFIG is not set: the e2e tier needs a Kubernetes cluster.\n"
            "  make e2e starts the project's kind cluster and loads the images;"
            " on another cluster, see docs/e2e.md",
            pytrace=False,
        )
    if not Path(kubeconfig.split(os.pathsep)[0]).exists():
        pytest.fail(f"KUBECONFIG={kubeconfig}: no such file (is the cluster up?)", pytrace=False)
    t0 = time.monotonic()
    kubectl = Kubectl(kubeconfig)
    helm = Helm(kubeconfig)
    res = kubectl.run("get", "nodes", "-o", "json", check=False, timeout=30)
    if not res.ok:
        pytest.fail(
            f"the cluster of KUBECONFIG={kubeconfig} does not answer:\n{res.describe()}",
            pytrace=False,
        )

    nodes = json.loads(res.stdout).get("items") or []
    # The nodes the suite's pods can land on (kind's control plane carries a NoSchedule taint).
    ready = [
        n
        for n in nodes
        if condition(n, "Ready").get("status") == "True"
        and not (n.get("spec") or {}).get("unschedulable")
        and untainted(n)
    ]
    if not ready:
        pytest.fail(
            "no Ready, schedulable node in the cluster:\n"
            + kubectl.run("get", "nodes", "-o", "wide", check=False).stdout,
            pytrace=False,
        )
    operator_image = os.environ.get("KERASOP_E2E_OPERATOR_IMAGE", DEFAULT_OPERATOR_IMAGE)
    runtime_image = os.environ.get("KERASOP_E2E_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE)
    problems = []
    for node in ready:
        for image in (operator_image, runtime_image):
            if _image_on_node(node, image) is False:
                problems.append(f"image {image} is not on node {node['metadata']['name']}")
    serving_image = os.environ.get("KERASOP_E2E_SERVING_IMAGE", DEFAULT_SERVING_IMAGE)
    if serving_image and any(_image_on_node(node, serving_image) is False for node in ready):
        print(f"e2e: {serving_image} is not on every node: servers use the runtime image")
        serving_image = ""
    if problems:
        pytest.fail(
            "\n".join(problems)
            + "\nthe chart uses pull policy IfNotPresent and there is no registry: build the"
            " images (scripts/images.sh save) and load them (cluster/kind/load-images.sh, or"
            " kind load docker-image <image>)",
            pytrace=False,
        )
    classes = kubectl.list("storageclass")
    if not any(
        (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
        for sc in classes
    ):
        pytest.fail(
            "the cluster has no default StorageClass (PVCs would stay Pending)", pytrace=False
        )
    existing = {c["metadata"]["name"] for c in kubectl.list("crd")}
    release = os.environ.get("KERASOP_E2E_RELEASE", "kerasop")
    env = E2E(
        kubectl=kubectl,
        helm=helm,
        namespace=f"kerasop-e2e-{secrets.token_hex(3)}",
        release=release,
        operator_image=operator_image,
        runtime_image=runtime_image,
        serving_image=serving_image,
        node=ready[0]["metadata"]["name"],
        keep=os.environ.get("KERASOP_E2E_KEEP") == "1",
        preexisting_crds={c for c in CRDS if c in existing},
    )
    _session_phase("cluster checks", t0)
    yield env


@pytest.fixture(scope="session")
def operator(e2e: E2E) -> Iterator[E2E]:
    """The chart installed into kerasop-system, operator running."""
    t0 = time.monotonic()
    k, helm = e2e.kubectl, e2e.helm
    listed = helm.run("list", "-n", OPERATOR_NAMESPACE, "-q", "--all", check=False)
    if e2e.release in listed.stdout.split():
        pytest.fail(
            f"a Helm release {e2e.release!r} already exists in {OPERATOR_NAMESPACE}: the e2e tier"
            f" installs its own; remove it (helm uninstall {e2e.release} -n {OPERATOR_NAMESPACE})"
            " or set KERASOP_E2E_RELEASE",
            pytrace=False,
        )
    e2e.created_operator_namespace = k.get("namespace", OPERATOR_NAMESPACE) is None
    op_repo, op_tag = _split_image(e2e.operator_image)
    rt_repo, rt_tag = _split_image(e2e.runtime_image)
    try:
        helm.run(
            "install",
            e2e.release,
            str(CHART),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            f"operator.image.repository={op_repo}",
            "--set",
            f"operator.image.tag={op_tag}",
            "--set",
            "operator.image.pullPolicy=IfNotPresent",
            "--set",
            f"runtime.image.repository={rt_repo}",
            "--set",
            f"runtime.image.tag={rt_tag}",
            "--set",
            "runtime.image.pullPolicy=IfNotPresent",
            *_serving_image_values(e2e.serving_image),
            "--set",
            # Kueue support where Kueue runs (cluster/kind/up.sh installs it; scenario f3)
            f"kueue.enabled={str(_served(k, 'workloads.kueue.x-k8s.io')).lower()}",
            "--set",
            "operator.logFormat=text",
            "--wait",
            "--timeout",
            "5m",
            timeout=420,
        )
        for crd in CRDS:
            k.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        wait_for(
            "the operator pod to run",
            lambda: any(condition(p, "Ready").get("status") == "True" for p in e2e.operator_pods()),
            interval=2,
            timeout=180,
            diagnose=lambda: Diagnostics(k, OPERATOR_NAMESPACE, OPERATOR_NAMESPACE).report(),
        )
    except BaseException:
        if not e2e.keep:
            _uninstall(e2e)
        raise
    _session_phase("helm install + operator running", t0)
    yield e2e
    if not e2e.keep:
        _uninstall(e2e)


def _uninstall(e2e: E2E) -> None:
    k = e2e.kubectl
    if not e2e.uninstalled:
        e2e.helm.run(
            "uninstall",
            e2e.release,
            "-n",
            OPERATOR_NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
            check=False,
        )
        e2e.uninstalled = True
    if e2e.created_operator_namespace:
        k.run(
            "delete",
            "namespace",
            OPERATOR_NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
            check=False,
            timeout=240,
        )
    for crd in CRDS:
        if crd not in e2e.preexisting_crds:
            k.run(
                "delete",
                "crd",
                crd,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
                check=False,
                timeout=180,
            )


@pytest.fixture(scope="session")
def namespace(operator: E2E) -> Iterator[E2E]:
    """The test namespace with the in-cluster scripts; removed (with its resources) at the end."""
    e2e = operator
    k = e2e.kubectl
    k.run("create", "namespace", e2e.namespace)
    # Every pod the operator (and the suite) creates must pass Pod Security `restricted`.
    k.run(
        "label",
        "namespace",
        e2e.namespace,
        f"{LABEL_PART_OF}=kerasop-e2e",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    k.run(
        "create", "configmap", SCRIPTS, "-n", e2e.namespace, f"--from-file={E2E_DIR / 'incluster'}"
    )
    yield e2e
    if e2e.keep:
        print(f"\nKERASOP_E2E_KEEP=1: kept namespace {e2e.namespace} and release {e2e.release}")
        return
    _delete_namespace(e2e)


def _delete_namespace(e2e: E2E) -> None:
    """Delete the kerasop resources first (their finalizers need the operator), then the rest."""
    k, ns = e2e.kubectl, e2e.namespace
    for kind in ("kerasmodelservices", "kerastrainingjobs"):
        k.run(
            "delete",
            kind,
            "--all",
            "-n",
            ns,
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=180,
        )
    for kind in ("kerasmodelservices", "kerastrainingjobs"):
        # If the operator is gone (or broken), its finalizers would keep the namespace forever.
        for obj in k.list(kind, ns) if _served(k, kind) else []:
            k.run(
                "patch",
                kind,
                obj["metadata"]["name"],
                "-n",
                ns,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
    k.run(
        "delete",
        "namespace",
        ns,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=300s",
        check=False,
        timeout=360,
    )


def _served(k: Kubectl, kind: str) -> bool:
    return k.run("get", kind, "-A", "--ignore-not-found", "-o", "name", check=False).ok


@pytest.fixture(scope="session")
def data(namespace: E2E) -> E2E:
    """PVC ``training-data`` (default StorageClass) filled by ``kerasop sample-data``.

    Holds dense/train.csv (the article's 784-feature CSV), images/data.csv + PNGs (32x32
    shapes) and bad/train.csv (a non-numeric cell, for the failure scenario).
    """
    e2e = namespace
    t0 = time.monotonic()
    e2e.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": DATA_CLAIM, "labels": {LABEL_PART_OF: "kerasop-e2e"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        e2e.namespace,
    )
    script = (
        "set -e; kerasop sample-data dense --data-dir /data; "
        "kerasop sample-data images --data-dir /data; "
        "mkdir -p /data/bad; printf 'f0,f1,f2,label\\n0.1,0.2,0.3,1\\n0.4,oops,0.6,0\\n' "
        "> /data/bad/train.csv; find /data -maxdepth 2 | sort | head -20; "
        "wc -l /data/dense/train.csv /data/images/data.csv"
    )
    log = e2e.run_pod(
        runtime_pod(
            "e2e-data-gen",
            e2e.runtime_image,
            ["sh", "-c", script],
            claims={"/data": (DATA_CLAIM, False)},
        ),
        timeout=600,
    )
    assert "dense/train.csv" in log and "images/data.csv" in log, log
    # A node-local volume (kind's "standard" class) pins every pod of the data to its node:
    # the scenarios that pick a node (f's fake GPU) must pick that one.
    e2e.node = claim_node(e2e, DATA_CLAIM) or e2e.node
    _session_phase("data PVC filled (kerasop sample-data)", t0)
    return e2e


def claim_node(e2e: E2E, claim: str) -> str | None:
    """The node a claim's volume is bound to by its node affinity (None when it has none)."""
    k = e2e.kubectl
    volume = (k.get("pvc", claim, e2e.namespace) or {}).get("spec", {}).get("volumeName")
    pv = k.get("pv", volume) if volume else None
    terms = (((pv or {}).get("spec", {}).get("nodeAffinity") or {}).get("required") or {}).get(
        "nodeSelectorTerms"
    ) or []
    hostnames = {
        value
        for term in terms
        for expr in term.get("matchExpressions") or []
        if expr.get("key") == "kubernetes.io/hostname" and expr.get("operator") == "In"
        for value in expr.get("values") or []
    }
    for node in k.list("nodes"):
        if node["metadata"]["labels"].get("kubernetes.io/hostname") in hostnames:
            return node["metadata"]["name"]
    return None


# ---------------------------------------------------------------------------------------------
# the article's dense classifier: trained once, followed by scenarios a, b, c, g and h

DENSE = "dense-classifier"
DENSE_EPOCHS = 3


def dense_job_manifest() -> dict[str, Any]:
    """examples/dense-classifier.yaml's job, epochs reduced and the SavedModel asked for (a
    copy; the file is untouched): scenario a checks the SavedModel beside model.onnx."""
    job = load_example("dense-classifier.yaml")["KerasTrainingJob"]
    job["spec"]["training"]["epochs"] = DENSE_EPOCHS
    job["spec"]["output"]["formats"] = ["savedmodel", "onnx"]
    return job


@pytest.fixture(scope="session")
def dense_job(data: E2E) -> dict[str, Any]:
    """The example job applied and Succeeded (its object, status included)."""
    e2e = data
    e2e.kubectl.apply(dense_job_manifest(), e2e.namespace)
    return e2e.wait_job_phase(DENSE, "Succeeded", timeout=900)


@pytest.fixture(scope="session")
def toolbox(data: E2E, dense_job: dict[str, Any]) -> str:
    """A long-running pod of the runtime image (python, keras) with the data volume, the
    dense model's store volume (read-only) and the scripts: the in-cluster client."""
    e2e = data
    claim = dense_job["status"]["modelClaimName"]
    pod = runtime_pod(
        TOOLBOX,
        e2e.runtime_image,
        ["/usr/bin/tini", "--", "sleep", "infinity"],
        claims={"/data": (DATA_CLAIM, True), "/models": (claim, True)},
        scripts_configmap=SCRIPTS,
        restart="Always",
    )
    e2e.kubectl.create(pod, e2e.namespace)
    e2e.wait_pod_ready(TOOLBOX)
    return TOOLBOX


@pytest.fixture(scope="session")
def dense_service(dense_job: dict[str, Any], data: E2E) -> dict[str, Any]:
    """examples/dense-classifier.yaml's KerasModelService, Ready."""
    e2e = data
    svc = load_example("dense-classifier.yaml")["KerasModelService"]
    e2e.kubectl.apply(svc, e2e.namespace)
    return e2e.wait_service_ready(DENSE, version=dense_job["status"]["modelVersion"], timeout=600)


def new_job(
    name: str,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    path: str = "dense/train.csv",
    claim: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A dense-classifier job on the sample data (variations for the other scenarios)."""
    base = dense_job_manifest()
    base["metadata"] = {"name": name}
    s = base["spec"]
    s["training"]["epochs"] = epochs
    s["training"]["batchSize"] = batch_size
    s["data"]["path"] = path
    s["output"] = {"modelName": name, "storage": {"claimName": claim} if claim else {"size": "1Gi"}}
    s.update(spec)
    return base


def workers_apart(name: str) -> dict[str, Any]:
    """``spec.scheduling`` a user writes to insist on separate machines: the job's pods repel
    each other (required anti-affinity on the hostname)."""
    return {
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {LABEL_TRAINING_JOB: name}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    }


def check_workers_trained_one_model(e2e: E2E, name: str, epochs: int) -> tuple[list[int], int]:
    """Both pods of a 2-worker job took part and trained one model together: each log has
    the start event with its own worker index and about half the rows, epochs up to
    ``epochs``, and the same final (globally reduced) metrics; only worker 0 publishes.
    Returns the shard sizes and the training rows."""
    k, ns = e2e.kubectl, e2e.namespace
    pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}={name}")
    by_index: dict[int, list[dict]] = {}
    for pod in pods:
        index = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        by_index.setdefault(index, []).append(pod)
    assert sorted(by_index) == [0, 1], [p["metadata"]["name"] for p in pods]
    starts, dones = {}, {}
    for index, group in by_index.items():
        pod = group[-1]
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        log = k.logs(pod["metadata"]["name"], ns, container="trainer")
        start = events_in(log, "start")
        assert start, f"worker {index}: no start event in its log:\n{log[-3000:]}"
        start = start[-1]
        assert start["workers"] == 2 and start["workerIndex"] == index, start
        assert start["backend"] == "jax", start
        seen = [e["epoch"] for e in events_in(log, "epoch")]
        assert seen and max(seen) == epochs, f"worker {index} epochs {seen}:\n{log[-3000:]}"
        starts[index] = start
        done_events = events_in(log, "done")
        assert done_events, f"worker {index}: no done event in its log:\n{log[-3000:]}"
        dones[index] = done_events[-1]
    shards = [starts[i]["shardSize"] for i in (0, 1)]
    total = starts[0]["trainRows"]
    assert all(s > 0 for s in shards) and sum(shards) <= total, (shards, total)
    assert all(abs(s - total / 2) <= 1 for s in shards), f"uneven shards {shards} of {total}"
    assert dones[0]["metrics"] == dones[1]["metrics"], f"two models, not one: {dones}"
    assert dones[0]["modelVersion"] == 1 and dones[1].get("modelVersion") is None, dones
    return shards, total


def exec_json(e2e: E2E, *command: str, timeout: float = 300) -> dict[str, Any]:
    """Run a script in the toolbox pod; return its ``RESULT {json}`` line."""

    res = e2e.kubectl.exec(TOOLBOX, e2e.namespace, *command, timeout=timeout, check=False)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise E2EError(f"no RESULT line from {' '.join(command)}:\n{res.describe()}")


class LoadGen:
    """The in-cluster load generator (incluster/loadgen.py), detached in the toolbox pod.

    It runs there on its own (``nohup``, output to files in the pod), so nothing it measures
    passes through the API server: a scenario may restart the API server or a kubelet under
    load. Bounded twice: it stops when :meth:`stop` creates its stop file, and by itself after
    ``max_seconds``.
    """

    def __init__(
        self,
        e2e: E2E,
        host: str,
        model: str,
        *,
        tag: str,
        concurrency: int = 2,
        interval: float = 0.05,
        max_seconds: float = 900,
    ) -> None:
        self.e2e = e2e
        self.stop_file = f"/tmp/loadgen-stop-{tag}"
        self.out = f"/tmp/loadgen-{tag}"
        self.max_seconds = max_seconds
        argv = [
            "python",
            "/scripts/loadgen.py",
            "--host",
            host,
            "--model",
            model,
            "--csv",
            "/data/dense/train.csv",
            "--concurrency",
            str(concurrency),
            "--interval",
            str(interval),
            "--max-seconds",
            str(max_seconds),
            "--stop-file",
            self.stop_file,
        ]
        script = (
            f"rm -f {self.stop_file} {self.out}.out {self.out}.err;"
            f" nohup {shlex.join(argv)} > {self.out}.out 2> {self.out}.err < /dev/null &"
        )
        e2e.kubectl.exec(TOOLBOX, e2e.namespace, "sh", "-c", script)
        self.t0 = time.monotonic()

    def _touch_stop(self) -> None:
        self.e2e.kubectl.exec(TOOLBOX, self.e2e.namespace, "touch", self.stop_file, check=False)

    def stop(self) -> dict[str, Any]:

        self._touch_stop()
        deadline = time.monotonic() + 90
        out = err = ""
        while time.monotonic() < deadline:
            out = self.e2e.kubectl.exec(
                TOOLBOX, self.e2e.namespace, "cat", f"{self.out}.out", check=False
            ).stdout
            for line in reversed(out.splitlines()):
                if line.startswith("RESULT "):
                    err = self.e2e.kubectl.exec(
                        TOOLBOX, self.e2e.namespace, "tail", "-n", "12", f"{self.out}.err"
                    ).stdout
                    result = json.loads(line[len("RESULT ") :])
                    result["progress"] = err.strip().splitlines()
                    return result
            time.sleep(1)
        err = self.e2e.kubectl.exec(
            TOOLBOX, self.e2e.namespace, "tail", "-n", "40", f"{self.out}.err", check=False
        ).stdout
        raise E2EError(f"the load generator gave no RESULT in 90 s:\n{out[-2000:]}\n{err}")

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self._touch_stop()


def no_request_lost(result: dict[str, Any], phase: Any, what: str, minimum: int = 100) -> None:
    """Note a load window in the phase log and check it had enough traffic and no failure."""
    phase.note(
        f"{what}: {result['total']} requests in {result['seconds']}s, {result['failed']} failed"
    )
    shown = json.dumps({k: v for k, v in result.items() if k != "latencies"}, indent=1)
    assert result["total"] >= minimum, f"too little traffic to judge:\n{shown}"
    assert result["failed"] == 0, shown
