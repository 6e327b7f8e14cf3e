"""Local mode of the closed loop (kerasop serve with spec.rollout): the gate refuses a worse
version while the old one keeps serving, a good one walks the canary steps under real
requests and is promoted; `kerasop history` shows it all."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
from serverkit import DENSE, FEATURES, dense_metadata, dense_model, rows, write_version

from kerasop.spec import RolloutSpec
from kerasop_cli import main as cli
from kerasop_cli.local_rollout import LocalRollout, format_history, history_rows
from kerasop_server.config import ServerConfig
from kerasop_server.runner import BackgroundServer


def metadata(accuracy: float, job: str) -> dict:
    meta = dense_metadata()
    meta["metrics"] = {"accuracy": accuracy, "loss": 1 - accuracy}
    meta["lineage"] = {"job": job, "specHash": "0123456789abcdef", "dataFingerprint": "sha256:ab"}
    return meta


def test_local_gate_canary_promote_and_history(tmp_path: Path, capsys) -> None:
    store, plan = tmp_path / "models", tmp_path / "rollout" / "svc.json"
    write_version(store, DENSE, dense_model(seed=1), metadata(0.95, "first"))
    policy = RolloutSpec.model_validate(
        {
            "gate": {"min": {"val_accuracy": 0.9}, "maxRegression": {"val_accuracy": 0.02}},
            "canary": {"steps": [50, 100], "dwellSeconds": 1, "maxErrorRate": 0.0},
        }
    )
    log = io.StringIO()
    config = ServerConfig(
        store_root=store, model=DENSE, host="127.0.0.1", port=0, poll_seconds=0.1, rollout_file=plan
    )
    with BackgroundServer(config) as server:
        loop = LocalRollout(
            policy, store, DENSE, plan, f"{server.url}/metrics", interval=0.2, out=log
        )
        loop.start()
        server.wait_ready()
        x = rows(1, seed=9)
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, FEATURES],
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                }
            ]
        }

        def wait_for(check, what: str) -> list[str]:
            versions: list[str] = []
            deadline = time.monotonic() + 90
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while time.monotonic() < deadline:
                    r = client.post(f"/v2/models/{DENSE}/infer", json=body)
                    assert r.status_code == 200, r.text
                    versions.append(r.json()["model_version"])
                    if check():
                        return versions
                    time.sleep(0.02)
            raise AssertionError(f"{what}: {log.getvalue()}")

        def status() -> dict:
            return json.loads(plan.with_suffix(".status.json").read_text())

        wait_for(lambda: status().get("rollout", {}).get("stable") == 1, "version 1 serves")
        write_version(store, DENSE, dense_model(seed=1, bias=-3.0), metadata(0.5, "shuffled"))
        served = wait_for(lambda: status()["rollout"].get("state") == "Refused", "refused")
        assert set(served) == {"1"}
        write_version(store, DENSE, dense_model(seed=1, bias=3.0), metadata(0.96, "better"))
        served = wait_for(lambda: status()["rollout"].get("stable") == 3, "promoted")
        assert "3" in served and "2" not in served
        loop.stop()
    assert "Refused: version 2 refused: gate: val_accuracy 0.5 < min 0.9" in log.getvalue()
    assert "Canary: version 3: 50% of requests" in log.getvalue()

    rows_ = history_rows(store, DENSE, plan.with_suffix(".status.json"))
    assert [(r["version"], r["outcome"], r["job"]) for r in rows_] == [
        (1, "Promoted", "first"),
        (2, "Refused", "shuffled"),
        (3, "Promoted", "better"),
    ]
    assert "accuracy=0.95" in format_history(rows_)
    # the CLI command reads the same files
    code = cli.main(["history", DENSE, "--store", str(store), "--service", "svc"])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].split()[:3] == ["VERSION", "CREATED", "JOB"]
    assert "Refused" in out and "walked through every canary step" in out
