"""Fixtures for the Helm chart tests: helm (cluster/get-tools.sh) and a real API server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

CHART = REPO_ROOT / "charts" / "keras-operator"
RELEASE = "kerasop"
RELEASE_NAMESPACE = "kerasop-system"


class Helm:
    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": "/tmp/kerasop-helm/cache",
            "HELM_CONFIG_HOME": "/tmp/kerasop-helm/config",
            "HELM_DATA_HOME": "/tmp/kerasop-helm/data",
        }
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, *set_args: str, include_crds: bool = False) -> str:
        args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
        if include_crds:
            args.append("--include-crds")
        for s in set_args:
            args += ["--set", s]
        return self.run(*args).stdout

    def objects(self, *set_args: str) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.template(*set_args)) if d]


@pytest.fixture(scope="session")
def helm() -> Helm:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "cluster" / "get-tools.sh")],
        stdout=subprocess.PIPE,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, "cluster/get-tools.sh failed"
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    assert binary.exists(), binary
    return Helm(binary)


@pytest.fixture(scope="session")
def kube():
    from tests.support.kube import kube_cluster

    # The controller manager aggregates the chart's edit/view ClusterRoles into the built-in ones.
    with kube_cluster(with_controller_manager=True) as cluster:
        yield cluster
