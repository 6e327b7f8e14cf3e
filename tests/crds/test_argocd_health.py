"""The Argo CD health checks in docs/argocd.md, run by a real Lua 5.1 interpreter.

Argo CD runs health scripts with gopher-lua (Lua 5.1); Debian's ``lua5.1`` runs the same
language. The statuses fed in are built with the typed status models, so a renamed status field
breaks this test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kerasop import status as st

DOC = Path(__file__).resolve().parents[2] / "docs" / "argocd.md"
KEY = "resource.customizations.health.kerasop.io_{}"


def scripts() -> dict[str, str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    for block in blocks:
        doc = yaml.safe_load(block)
        if doc.get("kind") == "ConfigMap":
            return doc["data"]
    raise AssertionError("no argocd-cm ConfigMap in docs/argocd.md")


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        assert value.isascii()
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(value)


def health(kind: str, status: dict[str, Any] | None, generation: int = 1) -> tuple[str, str]:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    assert lua, "Lua 5.1 interpreter missing: apt-get install lua5.1"
    obj = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": generation},
    }
    if status is not None:
        obj["status"] = status
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local function check()\n{scripts()[KEY.format(kind)]}\nend\n"
        "local hs = check()\n"
        'io.write(hs.status, "\\t", hs.message or "")\n'
    )
    proc = subprocess.run(
        [lua, "-"], input=program, capture_output=True, text=True, timeout=10, check=False
    )
    assert proc.returncode == 0, proc.stderr
    state, _, message = proc.stdout.partition("\t")
    return state, message


def cond(
    type_: str, status: str = "True", message: str | None = None, reason: str = "R"
) -> st.Condition:
    return st.Condition(type=type_, status=status, reason=reason, message=message)


def job(**kw) -> dict[str, Any]:
    return st.KerasTrainingJobStatus(**kw).to_status()


def svc(**kw) -> dict[str, Any]:
    return st.KerasModelServiceStatus(**kw).to_status()


@pytest.mark.parametrize(
    "status,generation,expected,in_message",
    [
        (None, 1, "Progressing", "Waiting for the operator"),
        (job(phase="Running", observed_generation=1), 2, "Progressing", "latest spec"),
        (job(phase="Pending", observed_generation=1), 1, "Progressing", "Pending"),
        (
            job(
                phase="Running",
                observed_generation=1,
                progress="3/10",
                conditions=[cond("Running")],
            ),
            1,
            "Progressing",
            "epoch 3/10",
        ),
        (
            job(
                phase="Succeeded",
                observed_generation=1,
                model_name="dense",
                model_version=2,
                conditions=[cond("Succeeded"), cond("Running", "False")],
            ),
            1,
            "Healthy",
            "Model dense version 2",
        ),
        (
            job(
                phase="Failed",
                failure=st.FailureStatus(reason="BadData", message="no label column"),
                conditions=[cond("Failed", message="trainer exited 3")],
            ),
            1,
            "Degraded",
            "BadData: no label column",
        ),
        (job(conditions=[cond("Failed", message="deadline")]), 1, "Degraded", "deadline"),
        (
            job(
                phase="Queued",
                observed_generation=1,
                conditions=[
                    cond("Running", "False", "LocalQueue team-a: insufficient quota"),
                    cond("Admitted", "False", "LocalQueue team-a: insufficient quota"),
                ],
            ),
            1,
            "Progressing",
            "insufficient quota",
        ),
        (
            job(
                phase="Preempted",
                observed_generation=1,
                conditions=[cond("Running", "False", "Preempted to accommodate a workload")],
            ),
            1,
            "Progressing",
            "Preempted to accommodate",
        ),
        (
            job(phase="Suspended", conditions=[cond("Suspended", message="suspended by user")]),
            1,
            "Suspended",
            "suspended by user",
        ),
    ],
)
def test_training_job_health(status, generation, expected, in_message):
    state, message = health("KerasTrainingJob", status, generation)
    assert state == expected, message
    assert in_message in message


@pytest.mark.parametrize(
    "status,expected,in_message",
    [
        (None, "Progressing", "Waiting for the operator"),
        (svc(phase="Pending"), "Progressing", "Pending"),
        (
            svc(
                phase="Progressing",
                conditions=[
                    cond("Ready", "False", "0/2 ready"),
                    cond("Progressing", message="rolling out v3"),
                ],
            ),
            "Progressing",
            "rolling out v3",
        ),
        (
            svc(phase="Ready", ready="2/2", serving_version=3, conditions=[cond("Ready")]),
            "Healthy",
            "Ready 2/2, serving version 3",
        ),
        (svc(phase="Ready", ready="1/1"), "Healthy", "Ready 1/1"),
        (
            svc(
                phase="Pending",
                ready="0/0",
                conditions=[cond("Ready", "False", "spec.replicas is 0", reason="ScaledToZero")],
            ),
            "Suspended",
            "spec.replicas is 0",
        ),
        (
            svc(phase="Failed", conditions=[cond("Ready", "False", "model not found")]),
            "Degraded",
            "model not found",
        ),
        (
            svc(phase="Ready", conditions=[cond("Ready"), cond("Degraded", message="crash loop")]),
            "Degraded",
            "crash loop",
        ),
    ],
)
def test_model_service_health(status, expected, in_message):
    state, message = health("KerasModelService", status)
    assert state == expected, message
    assert in_message in message
