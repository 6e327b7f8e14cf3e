"""Smoke run of bench/operator_scale.py against the component apiserver: tiny sizes, no thresholds.

The script starts its own operator process (``--operator local``), creates the
objects, waits until each has a status, restarts the operator, and cleans up; the numbers it writes must
say that every object got a status, without a reconcile error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opcomponent import REPO, cluster_with_crds

from kerasop_operator import kube as k
from kerasop_operator.kube import Kube
from tests.support.kube import KubeCluster

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[KubeCluster]:
    """An apiserver of its own: on the tier's shared one the session's operator may already be
    running (test order, or pytest-xdist's), and two operators on the same objects fight."""
    with cluster_with_crds() as c:
        yield c


def test_operator_scale_small_run(own_cluster: KubeCluster, tmp_path) -> None:
    cluster, api = own_cluster, Kube.from_environment(str(own_cluster.kubeconfig))
    out = tmp_path / "results"
    argv = [
        sys.executable, str(REPO / "bench" / "operator_scale.py"), "--quick",
        "--jobs", "12", "--services", "4", "--namespace", "scale-smoke",
        "--timeout", "120", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=cluster.env(), capture_output=True, text=True, timeout=400, check=False
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "operator_scale_quick.json").read_text())
    jobs, services = result["kinds"]
    assert (jobs["kind"], jobs["objects"], services["objects"]) == ("KerasTrainingJob", 12, 4)
    for row in (jobs, services):
        assert row["with_status"] == row["objects"], row
        assert row["reconcile_errors"] == 0 and row["error_log_lines"] == 0, row
        assert row["reconciles"] >= row["objects"], row
        assert 0 < row["delay_p50_s"] <= row["delay_p99_s"] <= row["all_status_s"], row
        assert row["rss_mb_peak"] > 0, row
    restart = result["restart"]  # the operator restarted: every object resumed, no error
    assert restart["settled_s"] is not None and restart["reconciles"] >= 16, restart
    assert restart["reconcile_errors"] == 0 and restart["error_log_lines"] == 0, restart
    assert jobs["phases"] == {"Suspended": 12}, jobs
    assert sum(services["phases"].values()) == 4, services
    # Jobs reconciled at once each added their reference to the shared trainer service
    # account, none lost (no garbage collector here: the references outlive the jobs).
    account = api.get(k.SERVICE_ACCOUNT, "scale-smoke", "kerasop-trainer")
    assert account is not None
    assert len(account["metadata"]["ownerReferences"]) == 12, account["metadata"]
    # The script cleaned up after itself: its objects are gone (their finalizers removed).
    assert api.list(k.TRAINING_JOB, "scale-smoke") == []
    assert api.list(k.MODEL_SERVICE, "scale-smoke") == []
