"""Fixtures of the operator unit tests (factories live in opfactories.py)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from opfactories import FakeKube  # noqa: E402


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()
