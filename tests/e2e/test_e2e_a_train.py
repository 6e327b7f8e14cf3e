"""Scenario a: the article's case, on a real cluster.

examples/dense-classifier.yaml's KerasTrainingJob (epochs reduced in a copy) is applied
as a user would; it must reach Succeeded with metrics and a model version in its status,
and the version directory must be complete on the model volume.
"""

from __future__ import annotations

import json

import pytest
from conftest import DENSE, DENSE_EPOCHS, E2E, TOOLBOX
from e2ekit import condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_a_article_dense_job_succeeds_and_writes_model(
    data: E2E, dense_job: dict, toolbox: str, phase
) -> None:
    e2e = data
    meta, st = dense_job["metadata"], dense_job["status"]
    shown = json.dumps(st, indent=1)

    assert st["phase"] == "Succeeded", shown
    assert st.get("observedGeneration") == meta["generation"], shown
    assert st.get("modelName") == DENSE, shown
    version = st.get("modelVersion")
    assert version == 1, f"a fresh model volume must get version 1:\n{shown}"
    assert st.get("modelPath") == f"{DENSE}/{version}", shown
    assert st.get("modelClaimName") == f"{DENSE}-models", shown
    assert st.get("epochs") == DENSE_EPOCHS and st.get("epoch") == DENSE_EPOCHS, shown
    assert st.get("progress") == f"{DENSE_EPOCHS}/{DENSE_EPOCHS}", shown
    assert st.get("startTime") and st.get("completionTime"), shown
    final = st.get("finalMetrics") or {}
    assert {"loss", "accuracy"} <= set(final), f"finalMetrics lacks loss/accuracy:\n{shown}"
    assert final["accuracy"] > 0.6, f"the article's network should learn the sample data:\n{shown}"
    epoch_metrics = st.get("metrics") or {}
    assert "loss" in epoch_metrics, f"status.metrics (last epoch) missing:\n{shown}"
    workers = st.get("workers") or {}
    assert workers.get("desired") == 1 and workers.get("succeeded") == 1, shown
    assert "failure" not in st, shown

    succeeded = condition(dense_job, "Succeeded")
    assert succeeded.get("status") == "True" and succeeded.get("reason") == "ModelWritten", shown
    assert condition(dense_job, "Failed").get("status") == "False", shown
    assert condition(dense_job, "Running").get("status") == "False", shown

    # The children the operator made: the example asks for a new 1Gi PVC that outlives the job.
    pvc = e2e.kubectl.get("pvc", f"{DENSE}-models", e2e.namespace)
    assert pvc is not None and pvc["status"]["phase"] == "Bound", pvc
    assert not pvc["metadata"].get("ownerReferences"), "storage.retain defaults to true: no owner"
    k8s_job = e2e.kubectl.get("job.batch", f"{DENSE}-trainer", e2e.namespace)
    assert k8s_job is not None, "the trainer Job is gone"
    owners = k8s_job["metadata"].get("ownerReferences") or []
    assert [o["kind"] for o in owners] == ["KerasTrainingJob"], owners

    # The version directory on the volume, seen from a pod that mounts the claim.
    vdir = f"/models/{DENSE}/{version}"
    listing = e2e.kubectl.exec(
        TOOLBOX,
        e2e.namespace,
        "sh",
        "-c",
        f"ls -1A {vdir}; echo ---; ls -1A {vdir}/variables; echo ---; ls -1A /models/{DENSE}",
    ).stdout
    top, variables, model_root = (part.split() for part in listing.split("---"))
    for name in ("saved_model.pb", "variables", "model.keras", "model.onnx", "metadata.json"):
        assert name in top, f"{vdir} lacks {name}: {top}"
    assert st.get("modelFormats") == ["keras", "savedmodel", "onnx"], shown  # output.formats
    assert any(v.startswith("variables.index") for v in variables), variables
    assert [d for d in model_root if d.isdigit()] == ["1"], (
        f"exactly one version directory expected in /models/{DENSE}: {model_root}"
    )
    assert [d for d in model_root if not d.isdigit()] == [], (
        f"no staging (.staging-*) or checkpoint directory may be left: {model_root}"
    )

    md = json.loads(e2e.kubectl.exec(TOOLBOX, e2e.namespace, "cat", f"{vdir}/metadata.json").stdout)
    assert md["name"] == DENSE, md
    assert md["input"]["kind"] == "tabular" and md["input"]["shape"] == [784], md["input"]
    assert md["output"]["kind"] == "binary", md["output"]
    assert md["epochsRun"] == DENSE_EPOCHS, md
    assert set(md["metrics"]) >= {"loss", "accuracy"}, md["metrics"]
    assert md["metrics"] == pytest.approx(final), (md["metrics"], final)

    events = e2e.kubectl.run(
        "get",
        "events",
        "-n",
        e2e.namespace,
        "--field-selector",
        f"involvedObject.kind=KerasTrainingJob,involvedObject.name={DENSE}",
        "-o",
        "jsonpath={range .items[*]}{.reason}{'\\n'}{end}",
    ).stdout.split()
    assert "Succeeded" in events, f"no Succeeded Event for the job: {events}"
    phase("assertions")
