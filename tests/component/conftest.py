"""Fixtures of the component tier: a real etcd + kube-apiserver and the operator process.

Helpers (playing the Job controller and kubelet, waiting, metrics) live in
opcomponent.py.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opcomponent import OperatorProcess, cluster_with_crds

from kerasop_operator.kube import Kube
from tests.support.kube import KubeCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[KubeCluster]:
    with cluster_with_crds() as c:
        yield c


@pytest.fixture(scope="session")
def api(cluster: KubeCluster) -> Kube:
    return Kube.from_environment(str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def operator(cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    logdir = Path(tempfile.mkdtemp(prefix="kerasop-operator-logs-"))
    op = OperatorProcess(cluster, logdir)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("KERASOP_KEEP_LOGS") != "1":
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"[operator] logs in {logdir}")


@pytest.fixture(autouse=True)
def _operator_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    op = request.node.funcargs.get("operator") if hasattr(request.node, "funcargs") else None
    if rep is not None and rep.failed and op is not None:
        print("----- operator log tail -----")
        print(op.logs(120))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


_ns_counter = itertools.count(1)


@pytest.fixture
def namespace(cluster: KubeCluster, api: Kube) -> str:
    name = f"t{os.getpid() % 1000}-{next(_ns_counter)}"
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name
