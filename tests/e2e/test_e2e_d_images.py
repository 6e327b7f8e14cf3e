"""Scenario d: the article's second case, image classification by transfer learning.

examples/vgg16-transfer.yaml (VGG16 base, include_top=False, weights none as the cluster
has no internet, 32x32 images listed in data.csv) trains for one epoch, is served by its
KerasModelService, and answers base64-encoded images with both protocols: the same numbers
as the version's model.keras gives locally for the same images decoded the trainer's way
(so a decoding bug in the server cannot hide behind a comparison of the server with itself).
"""

from __future__ import annotations

import json

import pytest
from conftest import DATA_CLAIM, E2E, SCRIPTS
from e2ekit import load_example, runtime_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NAME = "vgg16-shapes"
IMAGES = [
    f"/data/images/images/{shape}_{i:03d}.png" for shape in ("circle", "square") for i in (0, 1)
]
TOLERANCE = 1e-4  # ONNX Runtime (the server's engine) vs Keras, float32 through VGG16


def test_d_image_transfer_learning_trains_and_serves_b64(data: E2E, phase) -> None:
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

    command = [
        "python",
        "/scripts/image_predict.py",
        "--host",
        NAME,
        "--model",
        NAME,
        "--model-dir",
        f"/models/{NAME}/1",
    ]
    for image in IMAGES:
        command += ["--image", image]
    log = e2e.run_pod(
        runtime_pod(
            "e2e-image-check",
            e2e.runtime_image,
            command,
            claims={"/data": (DATA_CLAIM, True), "/models": (st["modelClaimName"], True)},
            scripts_configmap=SCRIPTS,
        ),
        timeout=600,
    )
    out = json.loads(
        next(line for line in reversed(log.splitlines()) if line.startswith("RESULT "))[7:]
    )
    phase("b64 predictions (v1 + v2) and local Keras")
    shown = json.dumps(out, indent=1)[:4000]
    local = out["local"]
    assert len(local) == len(IMAGES), shown
    assert out["v1_status"] == 200, shown
    v1 = [p[0] for p in out["v1"]["predictions"]]
    assert max(abs(a - b) for a, b in zip(v1, local, strict=True)) <= TOLERANCE, shown
    assert out["v2_status"] == 200, shown
    v2 = out["v2"]["outputs"][0]
    assert v2["shape"] == [len(IMAGES), 1], shown
    assert max(abs(a - b) for a, b in zip(v2["data"], local, strict=True)) <= TOLERANCE, shown
    assert out["v2"]["model_version"] == "1", shown
    code, _md = out["v1_metadata"]
    assert code == 200, shown
