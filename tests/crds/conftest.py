"""Fixtures for the CRD tests: a real kube-apiserver with the generated CRDs applied."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CRD_NAMES = ("kerastrainingjobs.kerasop.io", "kerasmodelservices.kerasop.io")
NAMESPACE = "crd-tests"


def wait_for_crds(kube, names=CRD_NAMES, timeout: float = 60) -> None:
    """Established, and served by discovery (kubectl explain/create need both)."""
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        *[f"crd/{n}" for n in names],
        f"--timeout={int(timeout)}s",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = kube.kubectl(
            "api-resources", "--api-group=kerasop.io", "-o", "name", check=False
        ).stdout
        if all(n in out for n in names):
            return
        time.sleep(0.5)
    raise AssertionError(f"CRDs not discoverable after {timeout}s: {out!r}")


@pytest.fixture(scope="session")
def kube():
    from tests.support.kube import kube_cluster

    with kube_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def crd_cluster(kube):
    """The API server with crds/*.yaml applied and a test namespace."""
    kube.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    wait_for_crds(kube)
    kube.kubectl("create", "namespace", NAMESPACE)
    return kube
