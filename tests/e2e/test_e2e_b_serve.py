"""Scenario b: the KerasModelService of examples/dense-classifier.yaml serves the model.

Predictions through the Service (cluster DNS name, from a pod) with the TF Serving v1
protocol (row and columnar) and the Open Inference v2 protocol must equal the
predictions of the same model.keras loaded with Keras in a pod.
"""

from __future__ import annotations

import json

import pytest
from conftest import DENSE, E2E, exec_json
from e2ekit import condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

TOLERANCE = 1e-5


def test_b_service_ready_and_both_protocols_match_local_keras(
    data: E2E, dense_job: dict, dense_service: dict, toolbox: str, phase
) -> None:
    e2e = data
    version = dense_job["status"]["modelVersion"]
    st = dense_service["status"]
    shown = json.dumps(st, indent=1)
    assert st["servingVersion"] == version, shown
    assert st.get("modelName") == DENSE, shown
    assert st.get("readyReplicas") == 1 and st.get("ready") == "1/1", shown
    assert st.get("url") == f"http://{DENSE}.{e2e.namespace}.svc.cluster.local", shown
    for ctype, want in (
        ("Ready", "True"),
        ("ModelAvailable", "True"),
        ("Progressing", "False"),
        ("Degraded", "False"),
    ):
        assert condition(dense_service, ctype).get("status") == want, f"{ctype}:\n{shown}"

    dep = e2e.kubectl.get("deployment", f"{DENSE}-server", e2e.namespace)
    assert dep is not None, "no Deployment dense-classifier-server"
    # the dense model converts to ONNX: with a serving image, the slim one serves it
    assert "onnx" in dense_job["status"]["modelFormats"], dense_job["status"]
    (server,) = dep["spec"]["template"]["spec"]["containers"]
    assert server["image"] == (e2e.serving_image or e2e.runtime_image), server["image"]
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert annotations.get("kerasop.io/model-version") == str(version), annotations
    svc = e2e.kubectl.get("service", DENSE, e2e.namespace)
    assert svc is not None, svc
    assert [p["port"] for p in svc["spec"]["ports"]] == [80, 8081], svc  # http, grpc

    out = exec_json(
        e2e,
        "python",
        "/scripts/predict_check.py",
        "--host",
        DENSE,
        "--model",
        DENSE,
        "--model-dir",
        f"/models/{DENSE}/{version}",
        "--csv",
        "/data/dense/train.csv",
        "--rows",
        "8",
    )
    phase("predictions (pod: v1, v1 columnar, v2, local keras)")
    shown = json.dumps({k: v for k, v in out.items() if k != "metadata"}, indent=1)
    assert out["v1_status"] == 200 and out["v1_columnar_status"] == 200, shown
    assert out["v2_status"] == 200, shown
    assert len(out["local"]) == 8, shown  # the reference: model.keras run by Keras in a pod
    assert out["max_diff_v1"] is not None and out["max_diff_v1"] <= TOLERANCE, shown
    assert out["max_diff_v1_columnar"] is not None and out["max_diff_v1_columnar"] <= TOLERANCE, (
        shown
    )
    assert out["max_diff_v2"] is not None and out["max_diff_v2"] <= TOLERANCE, shown
    assert out["v2_model_version"] == str(version), shown
    assert out["v2_output_shape"] == [8, 1], shown
    status_code, status = out["v1_model_status"]
    assert status_code == 200, shown
    states = status["model_version_status"]
    assert states[0]["state"] == "AVAILABLE" and states[0]["version"] == str(version), shown
    assert out["v1_metadata_status"] == 200, shown
    assert out["v2_ready_status"] == 200 and out["v2_model_ready_status"] == 200, shown
    bad_code, bad_body = out["bad_input"]
    assert bad_code == 400 and isinstance(bad_body, dict) and bad_body.get("error"), shown
