"""Scenario d: the article's second case, image classification by transfer learning.

examples/vgg16-transfer.yaml (VGG16 base, include_top=False, weights none as the cluster
has no internet, 32x32 images listed in data.csv) trains for one epoch, is served by its
KerasModelService, and answers one base64-encoded image with both protocols.
"""

from __future__ import annotations

import json

import pytest
from conftest import E2E, exec_json
from e2ekit import load_example

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NAME = "vgg16-shapes"


def test_d_image_transfer_learning_trains_and_serves_b64(data: E2E, toolbox: str, phase) -> None:
    e2e = data
    docs = load_example("vgg16-transfer.yaml")
    job, svc = docs["KerasTrainingJob"], docs["KerasModelService"]
    assert job["metadata"]["name"] == NAME and job["spec"]["model"]["transfer"]["weights"] == "none"
    job["spec"]["training"]["epochs"] = 1
    e2e.kubectl.apply([job, svc], e2e.namespace)

    done = e2e.wait_job_phase(NAME, "Succeeded", timeout=1200)
    phase("VGG16 transfer job Succeeded")
    st = done["status"]
    shown = json.dumps(st, indent=1)
    assert st.get("modelVersion") == 1 and st.get("modelName") == NAME, shown
    assert {"loss", "accuracy"} <= set(st.get("finalMetrics") or {}), shown

    ready = e2e.wait_service_ready(NAME, version=1, timeout=600)
    phase("service Ready")
    assert ready["status"]["servingVersion"] == 1

    out = exec_json(
        e2e, "python", "/scripts/image_predict.py", "--host", NAME, "--model", NAME,
        "--image", "/data/images/images/circle_000.png",
    )
    phase("b64 predictions (v1 + v2)")
    shown = json.dumps(out, indent=1)[:4000]
    assert out["v1_status"] == 200, shown
    preds = out["v1"]["predictions"]
    assert len(preds) == 1 and len(preds[0]) == 1 and 0.0 <= preds[0][0] <= 1.0, shown
    assert out["v2_status"] == 200, shown
    v2 = out["v2"]["outputs"][0]
    assert v2["shape"] == [1, 1], shown
    assert abs(v2["data"][0] - preds[0][0]) <= 1e-5, shown
    assert out["v2"]["model_version"] == "1", shown
    code, md = out["v1_metadata"]
    assert code == 200, shown
