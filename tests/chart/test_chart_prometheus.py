"""The chart's alert rules and dashboard queries, checked by Prometheus's own promtool (built
from the Go module github.com/prometheus/prometheus by cluster/build-prometheus.sh; ``make tools``
builds it, and the fixture builds it when it is missing, so nothing here is skipped).

- ``promtool check rules`` on the PrometheusRule the chart renders;
- ``promtool test rules`` with tests/chart/prometheus/alerts.test.yaml: every alert fires on a
  failing series and stays quiet on healthy ones;
- every dashboard query parses: each is wrapped in a recording rule and checked by promtool
  (promtool parses queries only against a server, a rule file needs none). The e2e scenario
  (tests/e2e/test_e2e_b3_monitoring.py) runs them against a real Prometheus.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.prometheus import (
    ALL_ON,
    alert_names,
    binaries,
    dashboard_panels,
    grafana_expr,
    prometheus_config,
    rule_groups,
)

pytestmark = pytest.mark.prometheus

ALERT_TESTS = Path(__file__).parent / "prometheus" / "alerts.test.yaml"


@pytest.fixture(scope="session")
def promtool() -> Path:
    return binaries() / "promtool"


def run(promtool: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def render_rules(helm, directory: Path, *set_args: str) -> dict:
    groups = rule_groups(helm.objects(*ALL_ON, *set_args))
    (directory / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    return groups


def test_promtool_is_built_from_the_pinned_module(promtool):
    proc = run(promtool, "--version")
    assert proc.returncode == 0 and "promtool, version 3." in proc.stdout, proc


def test_rendered_alert_rules_pass_promtool_check(helm, promtool, tmp_path):
    groups = render_rules(helm, tmp_path)
    proc = run(promtool, "check", "rules", str(tmp_path / "rules.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_names(groups))} rules found" in proc.stdout


def test_promtool_check_rejects_a_broken_rule(promtool, tmp_path):
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum by (x) (rate(y[5m])"}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(bad))
    proc = run(promtool, "check", "rules", str(tmp_path / "rules.yaml"))
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr


def alert_cases() -> dict[str, dict[str, int]]:
    """Per alert name: how many evaluations of the test file expect it firing / quiet."""
    cases: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            seen = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            seen["firing" if case.get("exp_alerts") else "quiet"] += 1
    return cases


def test_every_alert_fires_on_failing_series_and_stays_quiet_on_healthy_ones(
    helm, promtool, tmp_path
):
    groups = render_rules(helm, tmp_path)
    cases = alert_cases()
    # Every alert the chart ships has a test where it fires and one where it is quiet.
    assert set(cases) == alert_names(groups), (set(cases), alert_names(groups))
    for name, seen in cases.items():
        assert seen["firing"] and seen["quiet"], (name, seen)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    proc = run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    "values, broken",
    [
        # A threshold of 100% no longer catches the 10% service.
        (("monitoring.prometheusRule.serverErrorRatio=1",), "KerasModelServiceErrorRate"),
        # Held for 30m, the alert is not firing yet at 10m.
        (("monitoring.prometheusRule.for=30m",), "KerasModelServiceErrorRate"),
    ],
)
def test_the_alert_tests_catch_a_changed_rule(helm, promtool, tmp_path, values, broken):
    render_rules(helm, tmp_path, *values)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    proc = run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert proc.returncode != 0 and f"alertname: {broken}" in proc.stdout + proc.stderr, proc


def test_every_dashboard_query_parses(promtool, tmp_path):
    panels = dashboard_panels()
    assert len(panels) >= 15, panels
    rules = [
        {"record": f"kerasop:dashboard_query_{i}", "expr": grafana_expr(q)}
        for i, (_, q) in enumerate(panels)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_scrape_config_from_the_chart_monitors_passes_promtool_check(helm, promtool, tmp_path):
    """The configuration the e2e Prometheus runs with (tests/support/prometheus.py turns the
    chart's ServiceMonitor and PodMonitor into Kubernetes SD scrape jobs) is a valid one."""
    objects = helm.objects(*ALL_ON)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(objects)))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    config = prometheus_config(objects, str(kubeconfig), "rules.yaml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {
        "serviceMonitor/kerasop-system/kerasop-keras-operator/0",
        "podMonitor/kerasop-system/kerasop-keras-operator-model-servers/0",
    }, set(jobs)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
