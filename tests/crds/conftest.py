"""Fixtures for the CRD tests: a real kube-apiserver with the generated CRDs applied."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CRD_NAMES = ("kerastrainingjobs.kerasop.io", "kerasmodelservices.kerasop.io")
NAMESPACE = "crd-tests"


@pytest.fixture(scope="session")
def kube():
    from tests.support.kube import kube_cluster

    with kube_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def crd_cluster(kube):
    """The API server with crds/*.yaml applied and a test namespace."""
    kube.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    kube.wait_for_crds(CRD_NAMES)
    kube.kubectl("create", "namespace", NAMESPACE)
    return kube
