"""bench/pod_startup.py needs a kubelet; its --dry-run manifests must be what the API
server accepts (server-side dry run on the component apiserver: schema, CEL rules,
Pod Security-shaped pods)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from opcomponent import REPO

from kerasop_operator.kube import Kube
from tests.support.bench import load
from tests.support.kube import KubeCluster

pytestmark = pytest.mark.component


def test_pod_startup_dry_run_manifests_pass_server_side_dry_run(
    cluster: KubeCluster, api: Kube, namespace: str
) -> None:
    argv = [
        sys.executable, str(REPO / "bench" / "pod_startup.py"), "--dry-run",
        "--jobs", "2", "--services", "2", "--runtime-image", "kerasop-runtime:test",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["Job", "KerasModelService", "KerasTrainingJob", "PersistentVolumeClaim", "Pod"]
    names = {d["metadata"]["name"] for d in docs}
    assert {
        "startup-job-1",
        "plain-job-1",
        "startup-svc-1",
        "plain-server-1",
        "startup-cnn",
    } <= names
    # No controller-manager here: the "default" ServiceAccount pods need is made by hand.
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": namespace},
        }
    )
    applied = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=done.stdout, check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(docs), applied.stdout


def test_pod_startup_reads_times_from_the_api_objects() -> None:
    """The times come from the pods' own fields (to the second), not from polling."""
    bench = load("pod_startup")
    pod = {
        "metadata": {"creationTimestamp": "2026-11-29T10:00:00Z"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-11-29T10:00:00Z",
                },
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-29T10:00:03Z"},
            ],
            "containerStatuses": [{"state": {"running": {"startedAt": "2026-11-29T10:00:02Z"}}}],
        },
    }
    created = bench.ts(pod["metadata"]["creationTimestamp"])
    assert bench.ready_at(pod) - created == 3
    assert bench.container_started(pod) - created == 2
    waiting = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "Pulling"}}}]}}
    assert bench.container_started(waiting) is None and bench.ready_at(waiting) is None
    assert bench.summary([1.0, 2.0, 3.0, 10.0]) == {
        "n": 4, "mean_s": 4.0, "p50_s": 2.5, "p99_s": 10.0, "values": [1.0, 2.0, 3.0, 10.0]
    }  # fmt: skip
