"""Helpers: names, merging, comparison, status patches, conditions, entry point."""

from __future__ import annotations

import sys

import pytest

from kerasop_operator.common import child_name, deep_merge, label_value, status_patch
from kerasop_operator.conditions import Cond, merge_conditions


def test_child_name():
    assert child_name("job", "-trainer") == "job-trainer"
    long = child_name("x" * 80, "-trainer")
    assert len(long) == 63 and long.endswith("-trainer")
    assert long == child_name("x" * 80, "-trainer")
    assert long != child_name("x" * 79 + "y", "-trainer")
    assert len(label_value("y" * 100)) <= 63


def test_deep_merge():
    base = {
        "a": {"b": 1, "c": [1, 2]},
        "containers": [{"name": "x", "image": "i", "env": [{"name": "A", "value": "1"}]}],
    }
    over = {
        "a": {"c": [3], "d": None},
        "containers": [
            {"name": "x", "env": [{"name": "B", "value": "2"}]},
            {"name": "y", "image": "j"},
        ],
    }
    out = deep_merge(base, over)
    assert out["a"] == {"b": 1, "c": [3]}
    assert out["containers"][0] == {
        "name": "x",
        "image": "i",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }
    assert out["containers"][1] == {"name": "y", "image": "j"}
    assert base["a"]["c"] == [1, 2], "inputs are not modified"
    assert deep_merge({"a": 1}, {"a": None}) == {}


def test_status_patch():
    assert status_patch({"a": 1, "b": [1]}, {"a": 1, "b": [1]}) == {}
    assert status_patch({"a": 1, "gone": 2, "kopf": {}}, {"a": 2}) == {"a": 2, "gone": None}
    assert status_patch(None, {"a": 1}) == {"a": 1}


def test_merge_conditions_keeps_time_unless_status_flips():
    first = merge_conditions(
        None, [Cond.of("Ready", False, "Waiting", "m1")], now="t1", generation=1
    )
    assert first == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Waiting",
            "message": "m1",
            "lastTransitionTime": "t1",
            "observedGeneration": 1,
        }
    ]
    second = merge_conditions(
        first, [Cond.of("Ready", False, "Other", "m2")], now="t2", generation=2
    )
    assert second[0]["lastTransitionTime"] == "t1" and second[0]["reason"] == "Other"
    assert second[0]["observedGeneration"] == 2
    third = merge_conditions(second, [Cond.of("Ready", True, "Ok")], now="t3")
    assert third[0]["lastTransitionTime"] == "t3"
    foreign = merge_conditions(
        [{"type": "External", "status": "True"}], [Cond.of("Ready", True, "Ok")], now="t"
    )
    assert [c["type"] for c in foreign] == ["Ready", "External"]


def test_main_parses_namespaces_from_env(monkeypatch):
    from kerasop_operator.main import parse_args

    monkeypatch.setenv("KERASOP_WATCH_NAMESPACES", " ml, team-b ,,")
    monkeypatch.setenv("KERASOP_METRICS_PORT", "9100")
    config = parse_args([])
    assert config.watch_namespaces == ("ml", "team-b")
    assert config.metrics_port == 9100
    assert parse_args(["-n", "x", "--metrics-port", "0"]).watch_namespaces == ("x",)
    assert parse_args(["--metrics-port", "0"]).metrics_port == 0
    monkeypatch.delenv("KERASOP_WATCH_NAMESPACES")
    assert parse_args([]).watch_namespaces == ()
    monkeypatch.setenv("KERASOP_PROGRESS_INTERVAL", "soon")
    with pytest.raises(SystemExit):
        parse_args([])


def test_operator_never_imports_tensorflow():
    import subprocess

    code = (
        "import sys, kerasop_operator.handlers, kerasop_operator.main;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'jax', 'torch')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_handlers_registered_without_results():
    import kopf

    import kerasop_operator.handlers as h

    registry = kopf.get_default_registry()
    ids = {handler.id for handler in registry._changing.get_all_handlers()}
    assert {
        "job-resume",
        "job-create",
        "job-update",
        "service-resume",
        "service-create",
        "service-update",
    } <= ids
    # No timers or daemons: they would make kopf add a finalizer, in a round trip of its own,
    # before the first reconcile of every new object (periodic.py does that work instead).
    assert not registry._spawning.get_all_handlers()
    # every handler returns None: kopf would otherwise store results in status
    for fn in (
        h.training_job_changed,
        h.model_service_changed,
        h.training_job_event,
        h.model_service_event,
    ):
        assert fn.__annotations__.get("return") in (None, "None")


def test_periodic_work_follows_the_watch_events():
    """What the handlers tell periodic.py: active jobs and running rollouts only."""
    import kopf

    import kerasop_operator.handlers as h
    from kerasop_operator.periodic import Periodic

    progress = Periodic("progress", 10, lambda ns, n: None, 1)
    rollout = Periodic("rollout", 10, lambda ns, n: None, 1)
    memo = kopf.Memo(periodic={"progress": progress, "rollout": rollout})

    def job(name, phase=None, suspend=False):
        return {
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"suspend": suspend},
            "status": {"phase": phase} if phase else {},
        }

    for body in (job("new"), job("running", "Running"), job("done", "Succeeded")):
        h._track(memo, "progress", "ADDED", body, h._training_active(body))
    h._track(memo, "progress", "MODIFIED", job("paused", suspend=True), False)
    assert progress.tracked() == [("ns", "new"), ("ns", "running")]
    body = job("running", "Succeeded")
    h._track(memo, "progress", "MODIFIED", body, h._training_active(body))
    h._track(memo, "progress", "DELETED", job("new"), True)
    assert progress.tracked() == []

    canary = {
        "metadata": {"namespace": "ns", "name": "s"},
        "status": {"rollout": {"phase": "Canary"}},
    }
    h._track(memo, "rollout", "ADDED", canary, h._rollout_active(canary))
    assert rollout.tracked() == [("ns", "s")]
    canary["status"]["rollout"]["phase"] = "Promoted"
    h._track(memo, "rollout", "MODIFIED", canary, h._rollout_active(canary))
    assert rollout.tracked() == []


def test_config_from_env(monkeypatch):
    from kerasop_operator.controller import Config

    monkeypatch.setenv("KERASOP_RUNTIME_IMAGE", "reg/runtime:2")
    monkeypatch.setenv("KERASOP_RUNTIME_IMAGE_PULL_POLICY", "Always")
    monkeypatch.setenv("KERASOP_CLUSTER_DOMAIN", "corp.local")
    monkeypatch.setenv("KERASOP_SERVING_IMAGE", "reg/serving:2")
    cfg = Config.from_env()
    assert cfg.serving_image == "reg/serving:2"
    assert (cfg.runtime_image, cfg.image_pull_policy, cfg.cluster_domain) == (
        "reg/runtime:2",
        "Always",
        "corp.local",
    )


def test_image_pull_policy_reaches_both_pod_kinds():
    from opfactories import model_service, training_job

    from kerasop_operator import serving, training

    job = training.desired_children(
        training_job(), default_image="i", image_pull_policy="Always"
    ).job
    assert job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    ref = serving.ModelRef("m", "c", 1, "x")
    dep = serving.desired_children(
        model_service(), ref, default_image="i", image_pull_policy="Never"
    ).deployment
    assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
