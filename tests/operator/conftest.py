"""Fixtures of the operator unit tests (factories live in opfactories.py)."""

from __future__ import annotations

import pytest
from opfactories import FakeKube


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()
