"""Scenario i: the user's own models on the real cluster (docs/own-models.md). Runs
before h, the clean-up (file order).

i1 examples/model-file.yaml: a saved functional .keras file with a custom layer (its module
   from codePath on the data volume) trains, is published and served (v1 and v2 equal to
   the same model.keras loaded in a pod);
i2 examples/builder.yaml: builder code from codePath, trained, published, served;
i3 examples/script-mode.yaml: the user's own script (examples/script/train.py, on the data
   volume, run in the runtime image) reports epochs into status, publishes, is served;
i4 examples/mixed-table.yaml: a table with string columns trains (categorical columns in
   metadata) and is served (Keras engine): raw CSV rows (strings for city and plan) over v1
   and v2 equal the same model.keras loaded in a pod; its numeric regression sibling is
   served too;
i5 a builder that raises: Failed with UserCodeError and the user's traceback in
   status.failure, one pod, no restarts, no version.
"""

from __future__ import annotations

import json

import pytest
from conftest import DATA_CLAIM, E2E, SCRIPTS
from e2ekit import LABEL_TRAINING_JOB, REPO, load_example, runtime_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REPO_SCRIPT = "examples/script/train.py"
TOLERANCE = 1e-5
EPOCHS = 2


@pytest.fixture(scope="module")
def own_data(data: E2E) -> E2E:
    """The data volume also holds mixed/, own-models/ and script/train.py."""
    e2e = data
    script = (
        "set -e; kerasop sample-data mixed --data-dir /data; "
        "kerasop sample-data own-models --data-dir /data; "
        'mkdir -p /data/script; printf "%s" "$TRAIN_PY" > /data/script/train.py; '
        "ls /data/own-models /data/own-models/code /data/script /data/mixed"
    )
    pod = runtime_pod(
        "e2e-own-data",
        e2e.runtime_image,
        ["sh", "-c", script],
        claims={"/data": (DATA_CLAIM, False)},
    )
    pod["spec"]["containers"][0]["env"] = [
        {"name": "TRAIN_PY", "value": (REPO / REPO_SCRIPT).read_text()}
    ]
    log = e2e.run_pod(pod, timeout=600)
    assert "net.keras" in log and "my_models.py" in log and "train.py" in log, log
    return e2e


def _train(e2e: E2E, job: dict) -> dict:
    job["spec"]["training"]["epochs"] = EPOCHS
    e2e.kubectl.apply(job, e2e.namespace)
    return e2e.wait_job_phase(job["metadata"]["name"], "Succeeded", timeout=1200)


def _served_equals_local(e2e: E2E, example: str, name: str, job: dict) -> None:
    version = job["status"]["modelVersion"]
    e2e.kubectl.apply(load_example(example)["KerasModelService"], e2e.namespace)
    e2e.wait_service_ready(name, version=version, timeout=600)
    out = _check_in_pod(e2e, name, version, job["status"]["modelClaimName"], _user_code(job))
    shown = json.dumps({k: v for k, v in out.items() if k != "metadata"}, indent=1)
    assert out["v1_status"] == 200 and out["v2_status"] == 200, shown
    assert out["max_diff_v1"] is not None and out["max_diff_v1"] <= TOLERANCE, shown
    assert out["max_diff_v2"] is not None and out["max_diff_v2"] <= TOLERANCE, shown


def _user_code(job: dict) -> list[str]:
    """predict_check.py's arguments to import the user's module, as the trainer did."""
    model = job["spec"].get("model") or {}
    if not model.get("codePath"):
        return []
    modules = (model.get("file") or {}).get("imports") or []
    if model.get("builder"):
        modules = [model["builder"]["module"]]
    args = ["--code-path", f"/data/{model['codePath']}"]
    for module in modules:
        args += ["--import", module]
    return args


def _check_in_pod(
    e2e: E2E,
    name: str,
    version: int,
    claim: str,
    extra: list[str] | None = None,
    *,
    script: str = "predict_check.py",
    csv: str = "/data/dense/train.csv",
) -> dict:
    """A check script (tests/e2e/incluster) in a pod with this model's store volume (each job
    has its own PVC): it calls the service and compares with model.keras; its RESULT line."""
    argv = [
        "python", f"/scripts/{script}", "--host", name, "--model", name,
        "--model-dir", f"/models/{name}/{version}", "--csv", csv, "--rows", "4", *(extra or []),
    ]  # fmt: skip
    pod = runtime_pod(
        f"e2e-{script.removesuffix('.py').replace('_', '-')}-{name}",
        e2e.runtime_image,
        argv,
        claims={"/data": (DATA_CLAIM, True), "/models": (claim, True)},
        scripts_configmap=SCRIPTS,
    )
    log = e2e.run_pod(pod, timeout=600)
    for line in reversed(log.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(f"no RESULT line:\n{log[-3000:]}")


def test_i1_model_file_trains_and_is_served(own_data: E2E, phase) -> None:
    job = _train(own_data, load_example("model-file.yaml")["KerasTrainingJob"])
    assert job["status"]["metrics"]["accuracy"] >= 0.8, job["status"]
    phase("model-file Succeeded")
    _served_equals_local(own_data, "model-file.yaml", "model-file", job)


def test_i2_builder_trains_and_is_served(own_data: E2E, phase) -> None:
    job = _train(own_data, load_example("builder.yaml")["KerasTrainingJob"])
    assert job["status"]["metrics"]["accuracy"] >= 0.8, job["status"]
    phase("builder Succeeded")
    _served_equals_local(own_data, "builder.yaml", "builder", job)


def test_i3_script_mode_reports_publishes_and_is_served(own_data: E2E, phase) -> None:
    job = load_example("script-mode.yaml")["KerasTrainingJob"]
    del job["spec"]["image"]  # the runtime image runs the script from the data volume
    job["spec"]["script"]["command"] = ["python", "/data/script/train.py"]
    job = _train(own_data, job)
    st = job["status"]
    assert st.get("epoch") == EPOCHS and st["metrics"]["accuracy"] >= 0.8, st
    phase("script-mode Succeeded")
    _served_equals_local(own_data, "script-mode.yaml", "script-mode", job)


def test_i4_mixed_table_trains_and_regression_is_served(own_data: E2E, phase) -> None:
    e2e = own_data
    docs = [d for d in load_example_all("mixed-table.yaml") if d["kind"] == "KerasTrainingJob"]
    for job in docs:
        job["spec"]["training"]["epochs"] = 20
        e2e.kubectl.apply(job, e2e.namespace)
    churn = e2e.wait_job_phase("churn", "Succeeded", timeout=1200)
    assert churn["status"]["metrics"]["accuracy"] >= 0.75, churn["status"]
    value = e2e.wait_job_phase("lifetime-value", "Succeeded", timeout=1200)
    assert "mae" in value["status"]["metrics"], value["status"]
    phase("mixed table jobs Succeeded")
    for svc in [
        d for d in load_example_all("mixed-table.yaml") if d["kind"] == "KerasModelService"
    ]:
        e2e.kubectl.apply(svc, e2e.namespace)
    e2e.wait_service_ready("lifetime-value", version=value["status"]["modelVersion"], timeout=600)
    # string inputs, no model.onnx: the server's Keras engine serves it
    version = churn["status"]["modelVersion"]
    e2e.wait_service_ready("churn", version=version, timeout=600)
    phase("mixed table services ready")
    # raw CSV rows (strings for city and plan) over v1 and v2, against model.keras in the pod
    out = _check_in_pod(
        e2e,
        "churn",
        version,
        churn["status"]["modelClaimName"],
        script="raw_rows_check.py",
        csv="/data/mixed/train.csv",
    )
    shown = json.dumps(out, indent=1)
    assert out["v1_status"] == 200 and out["v2_status"] == 200, shown
    assert all(isinstance(row[2], str) for row in out["rows"]), shown  # city as a string
    assert out["max_diff_v1"] is not None and out["max_diff_v1"] <= TOLERANCE, shown
    assert out["max_diff_v2"] is not None and out["max_diff_v2"] <= TOLERANCE, shown


def load_example_all(name: str) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text()) if d]


def test_i5_raising_builder_fails_with_user_code_error(own_data: E2E, phase) -> None:
    e2e = own_data
    job = load_example("builder.yaml")["KerasTrainingJob"]
    job["metadata"]["name"] = "builder-broken"
    job["spec"]["model"]["builder"]["args"] = {"width": "not-a-number"}  # the code raises
    e2e.kubectl.apply(job, e2e.namespace)
    failed = e2e.wait_job_phase("builder-broken", "Failed", timeout=900)
    failure = failed["status"].get("failure") or {}
    shown = json.dumps(failed["status"], indent=1)
    assert failure.get("reason") == "UserCodeError", shown
    assert "my_models.py" in failure.get("message", "") and "Traceback" in failure["message"], shown
    pods = e2e.kubectl.list("pods", e2e.namespace, f"{LABEL_TRAINING_JOB}=builder-broken")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    restarts = sum(s.get("restartCount", 0) for s in pods[0]["status"].get("containerStatuses", []))
    assert restarts == 0 and "modelVersion" not in failed["status"], shown
