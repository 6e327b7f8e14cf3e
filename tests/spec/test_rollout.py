"""The closed loop's pure logic: gate, shadow, canary state machine, rollback, restart-resume."""

from __future__ import annotations

import json
import math

import pytest

from kerasop import rollout
from kerasop.rollout import (
    Manual,
    RolloutState,
    VersionCounters,
    gate,
    routing,
    step,
)
from kerasop.server_metrics import parse_server_metrics, samples
from kerasop.spec import GateSpec, RolloutSpec

JOB_SPEC = {
    "data": {"format": "csv", "path": "train.csv"},
    "model": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
}

GOOD = {"metrics": {"loss": 0.20, "accuracy": 0.95}, "lineage": {"job": "j", "specHash": "abc"}}
OK = {"metrics": {"loss": 0.22, "accuracy": 0.94}}
WORSE = {"metrics": {"loss": 0.69, "accuracy": 0.51}}


def policy(**kw) -> RolloutSpec:
    return RolloutSpec.model_validate(kw)


def counters(version: int, requests: int, errors: int = 0, slow: int = 0, **shadow) -> dict:
    """Counters as a server reports them: fast requests in the 10 ms bucket, slow ones at 1 s."""
    fast = requests - slow
    buckets = {"0.01": float(fast), "1.0": float(requests), "+Inf": float(requests)}
    return {
        version: VersionCounters(
            requests=requests,
            errors=errors,
            buckets=buckets,
            shadow_compared=shadow.get("compared", 0),
            shadow_agreed=shadow.get("agreed", 0),
        )
    }


def run(pol, state, history=(), *, latest, meta, c=None, now, pinned=None, manual=None):
    return step(
        pol,
        state,
        list(history),
        latest=latest,
        metadata=meta,
        counters=c or {},
        now=now,
        now_text=f"t{now}",
        pinned=pinned,
        manual=manual,
    )


# -- gate -------------------------------------------------------------------------------------


def test_gate_floor_ceiling_and_regression():
    g = GateSpec.model_validate(
        {
            "min": {"val_accuracy": 0.9},
            "max": {"val_loss": 0.5},
            "maxRegression": {"val_accuracy": 0.02},
        }
    )
    assert gate(g, GOOD, None) is None
    assert gate(g, OK, GOOD) is None  # 0.01 worse: within the margin
    reason = gate(g, WORSE, GOOD)
    assert "val_accuracy 0.51 < min 0.9" in reason
    assert "val_loss 0.69 > max 0.5" in reason
    assert "worse than serving 0.95" in reason
    assert gate(None, WORSE, GOOD) is None


def test_gate_loss_regression_is_worse_when_higher_and_missing_metric_fails():
    g = GateSpec.model_validate({"maxRegression": {"loss": 0.01}})
    assert gate(g, {"metrics": {"loss": 0.19}}, GOOD) is None
    assert "worse than serving" in gate(g, {"metrics": {"loss": 0.25}}, GOOD)
    assert "auc is not in" in gate(GateSpec.model_validate({"min": {"auc": 0.5}}), GOOD, None)


# -- state machine -----------------------------------------------------------------------------


def test_first_version_serves_then_gate_refuses_a_worse_one_and_stable_keeps_serving():
    pol = policy(gate={"min": {"accuracy": 0.9}})
    d = run(pol, RolloutState(), latest=1, meta={1: GOOD}, now=0)
    assert d.state.stable == 1 and d.history[0]["outcome"] == "Promoted"
    assert d.history[0]["specHash"] == "abc"
    d = run(pol, d.state, d.history, latest=2, meta={1: GOOD, 2: WORSE}, now=10)
    assert d.state.stable == 1 and d.state.candidate is None
    assert d.state.summary == "Refused"
    assert [e["outcome"] for e in d.history] == ["Promoted", "Refused"]
    assert "accuracy 0.51 < min 0.9" in d.history[1]["reason"]
    assert d.events[0][:2] == ("Warning", "Refused")
    assert routing(d.state) == {"stable": 1, "candidate": None, "weight": 0, "shadow": False}
    # the refused version is never tried again by itself
    again = run(pol, d.state, d.history, latest=2, meta={1: GOOD, 2: WORSE}, now=20)
    assert again.events == [] and again.history == d.history


def test_pinning_a_refused_version_serves_it():
    pol = policy(gate={"min": {"accuracy": 0.9}})
    d = run(
        pol,
        RolloutState(stable=1),
        [{"version": 1, "outcome": "Promoted"}],
        latest=2,
        meta={1: GOOD, 2: WORSE},
        now=0,
    )
    assert d.state.stable == 1
    d = run(pol, d.state, d.history, latest=2, meta={1: GOOD, 2: WORSE}, now=5, pinned=2)
    assert d.state.stable == 2 and d.history[-1]["outcome"] == "Promoted"


def test_good_canary_walks_its_steps_and_is_promoted_once():
    pol = policy(canary={"steps": [10, 50, 100], "dwellSeconds": 30, "maxErrorRate": 0.05})
    meta = {1: GOOD, 2: OK}
    s = RolloutState(stable=1)
    d = run(pol, s, latest=2, meta=meta, now=0)
    assert (d.state.phase, d.state.weight, d.state.summary) == ("Canary", 10, "Canary 10%")
    assert routing(d.state) == {"stable": 1, "candidate": 2, "weight": 10, "shadow": False}
    weights = [d.state.weight]
    t, served = 0, 0
    while d.state.phase == "Canary":
        t += 31
        served += 100
        d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, served), now=t)
        weights.append(d.state.weight)
    assert weights == [10, 50, 100, 0]
    assert d.state.stable == 2 and d.state.last == "Promoted"
    assert [e["outcome"] for e in d.history] == ["Promoted"]
    # nothing happens twice
    again = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, served), now=t + 100)
    assert again.events == [] and again.state.stable == 2


def test_canary_error_rate_breach_rolls_back_to_stable():
    pol = policy(canary={"steps": [10, 100], "dwellSeconds": 60, "maxErrorRate": 0.01})
    d = run(pol, RolloutState(stable=1), latest=2, meta={1: GOOD, 2: OK}, c=counters(2, 0), now=0)
    d = run(
        pol,
        d.state,
        d.history,
        latest=2,
        meta={1: GOOD, 2: OK},
        c=counters(2, 200, errors=20),
        now=5,
    )
    assert d.state.stable == 1 and d.state.phase == "Stable" and d.state.summary == "RolledBack"
    assert routing(d.state)["candidate"] is None
    assert "error rate 0.100 > maxErrorRate 0.01" in d.history[-1]["reason"]
    assert d.events[0][:2] == ("Warning", "RolledBack")


def test_canary_p99_limits_absolute_and_relative_to_stable():
    pol = policy(canary={"steps": [50, 100], "dwellSeconds": 60, "maxP99Ms": 100})
    d = run(pol, RolloutState(stable=1), latest=2, meta={1: GOOD, 2: OK}, now=0)
    d2 = run(
        pol, d.state, d.history, latest=2, meta={1: GOOD, 2: OK}, c=counters(2, 100, slow=5), now=5
    )
    assert "p99 1000 ms > maxP99Ms 100" in d2.history[-1]["reason"]

    pol = policy(canary={"steps": [50, 100], "dwellSeconds": 60, "maxP99Ratio": 2})
    d = run(pol, RolloutState(stable=1), latest=2, meta={1: GOOD, 2: OK}, now=0)
    both = {**counters(1, 100), **counters(2, 100, slow=5)}
    d2 = run(pol, d.state, d.history, latest=2, meta={1: GOOD, 2: OK}, c=both, now=5)
    assert "2 x stable p99 10 ms" in d2.history[-1]["reason"]


def test_counters_are_measured_from_the_step_start_and_survive_pod_restarts():
    pol = policy(canary={"steps": [10, 100], "dwellSeconds": 10, "maxErrorRate": 0.05})
    meta = {1: GOOD, 2: OK}
    # 50 errors happened before the step began (e.g. a previous attempt): not this window
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, c=counters(2, 100, errors=50), now=0)
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 200, errors=50), now=5)
    assert d.state.phase == "Canary"
    # the pod restarted: counters went down, the window counts from zero
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 30, errors=0), now=6)
    assert d.state.phase == "Canary"


def test_min_requests_holds_a_step():
    pol = policy(canary={"steps": [10, 100], "dwellSeconds": 1, "minRequests": 50})
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, now=0)
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 10), now=100)
    assert d.state.weight == 10
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 60), now=101)
    assert d.state.weight == 100


def test_a_canary_that_answers_nothing_is_never_promoted_by_itself():
    pol = policy(canary={"steps": [100], "dwellSeconds": 1})  # minRequests defaults to 1
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, now=0)
    d = run(pol, d.state, d.history, latest=2, meta=meta, c={}, now=3600)
    assert d.state.summary == "Canary 100%" and d.state.stable == 1


def test_dwell_begins_with_the_candidates_first_answer():
    """A new plan reaches the pods late: the dwell counts from the step's first request."""
    pol = policy(canary={"steps": [10, 100], "dwellSeconds": 30})
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, c=counters(2, 0), now=0)
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 0), now=50)
    assert d.state.phase_started == 50  # nothing answered yet
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 5), now=60)
    assert d.state.weight == 10  # 10 s of dwell so far, not 60
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 9), now=81)
    assert d.state.weight == 100


def test_unpinning_rolls_out_the_latest_promoted_version_again():
    meta = {1: GOOD, 2: OK}
    d = run(None, RolloutState(stable=1), latest=2, meta=meta, now=0)
    d = run(None, d.state, d.history, latest=1, meta=meta, now=1, pinned=1)
    assert d.state.stable == 1
    d = run(None, d.state, d.history, latest=2, meta=meta, now=2)
    assert d.state.stable == 2


def test_shadow_refuses_low_agreement_and_passes_high_agreement_into_canary():
    pol = policy(
        shadow={"durationSeconds": 30, "minRequests": 10, "minAgreement": 0.9},
        canary={"steps": [100], "dwellSeconds": 10},
    )
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, now=0)
    assert d.state.summary == "Shadow"
    assert routing(d.state) == {"stable": 1, "candidate": 2, "weight": 0, "shadow": True}
    low = run(
        pol,
        d.state,
        d.history,
        latest=2,
        meta=meta,
        c=counters(2, 0, compared=100, agreed=50),
        now=31,
    )
    assert low.state.summary == "Refused" and "agreement 0.500" in low.history[-1]["reason"]
    early = run(
        pol,
        d.state,
        d.history,
        latest=2,
        meta=meta,
        c=counters(2, 0, compared=100, agreed=99),
        now=10,
    )
    assert early.state.phase == "Shadow" and "agreement 0.990" in early.state.message
    high = run(
        pol,
        d.state,
        d.history,
        latest=2,
        meta=meta,
        c=counters(2, 0, compared=100, agreed=99),
        now=31,
    )
    assert high.state.summary == "Canary 100%"


def test_shadow_errors_refuse_the_version():
    pol = policy(shadow={"durationSeconds": 30, "maxErrorRate": 0.1})
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, now=0)
    c = counters(2, 0, compared=10)
    c[2].shadow_errors = 5
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=c, now=5)
    assert d.state.summary == "Refused" and "shadow errors 5 of 15" in d.history[-1]["reason"]


def test_manual_promote_and_abort_by_spec_and_annotation():
    pol = policy(canary={"steps": [10, 100], "dwellSeconds": 3600})
    meta = {1: GOOD, 2: OK}
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, now=0)
    p = run(pol, d.state, d.history, latest=2, meta=meta, now=1, manual=Manual(promote=2))
    assert p.state.stable == 2 and p.history[-1]["reason"] == "promoted by a person"
    by_annotation = Manual.of(pol, {rollout.ANN_ROLLOUT_ACTION: "abort=2"})
    a = run(pol, d.state, d.history, latest=2, meta=meta, now=1, manual=by_annotation)
    assert a.state.stable == 1 and a.state.summary == "RolledBack"
    stale = Manual.of(pol, {rollout.ANN_ROLLOUT_ACTION: "abort=7"})  # an older candidate's
    other = run(pol, d.state, d.history, latest=2, meta=meta, now=1, manual=stale)
    assert other.state.phase == "Canary"
    by_spec = Manual.of(policy(canary={"steps": [100]}, promote=2), None)
    assert by_spec == Manual(promote=2, abort=None)


def test_job_metadata_feeds_gate_and_history():
    job = {
        "metadata": {"name": "dense"},
        "spec": JOB_SPEC,
        "status": {"modelVersion": 2, "finalMetrics": {"accuracy": 0.5}, "dataFingerprint": "f"},
    }
    meta = rollout.job_metadata(job)
    history = [{"version": 1, "outcome": "Promoted", "metrics": {"accuracy": 0.95}}]
    known = rollout.known_metadata(history, 2, meta)
    pol = policy(gate={"maxRegression": {"accuracy": 0.05}})
    d = run(pol, RolloutState(stable=1), history, latest=2, meta=known, now=0)
    assert d.state.summary == "Refused"
    entry = d.history[-1]
    assert (
        entry["job"] == "dense" and entry["dataFingerprint"] == "f" and len(entry["specHash"]) == 16
    )


def test_restart_mid_canary_resumes_from_status_and_promotes_once():
    pol = policy(canary={"steps": [10, 50, 100], "dwellSeconds": 30})
    meta = {1: GOOD, 2: OK}
    old_version = counters(7, 1000)  # a version served long ago, still in the pods' registry
    d = run(pol, RolloutState(stable=1), latest=2, meta=meta, c=counters(2, 0) | old_version, now=0)
    d = run(pol, d.state, d.history, latest=2, meta=meta, c=counters(2, 100) | old_version, now=31)
    assert d.state.weight == 50
    assert set(d.state.baseline) == {2}  # only stable and candidate are kept
    # the operator restarts: only what was written to status survives (as JSON)
    saved = json.loads(json.dumps({"rollout": d.state.to_status(), "history": d.history}))
    resumed = RolloutState.from_status(saved["rollout"])
    assert resumed == d.state
    r = run(pol, resumed, saved["history"], latest=2, meta=meta, c=counters(2, 150), now=40)
    assert r.state.weight == 50 and r.events == []  # the dwell continues, not restarted
    r = run(pol, r.state, r.history, latest=2, meta=meta, c=counters(2, 200), now=62)
    assert r.state.weight == 100
    r = run(pol, r.state, r.history, latest=2, meta=meta, c=counters(2, 300), now=93)
    assert r.state.stable == 2
    promoted = [e for e in r.history if e["outcome"] == "Promoted"]
    assert [e["version"] for e in promoted] == [2]


def test_no_policy_promotes_at_once():
    d = run(None, RolloutState(stable=1), latest=2, meta={1: GOOD, 2: WORSE}, now=0)
    assert d.state.stable == 2 and d.history[-1]["outcome"] == "Promoted"
    assert d.history[-1]["reason"] == "no gate, shadow or canary is configured"


def test_promotion_history_names_only_the_checks_that_ran():
    meta = {1: GOOD, 2: OK}
    gate_only = run(policy(gate={"min": {"accuracy": 0.9}}), RolloutState(stable=1), latest=2,
                    meta=meta, now=0)  # fmt: skip
    assert gate_only.history[-1]["reason"] == "passed the gate"
    assert "shadow" not in gate_only.events[-1][2]

    shadow_only = policy(shadow={"durationSeconds": 30})
    d = run(shadow_only, RolloutState(stable=1), latest=2, meta=meta, now=0)
    d = run(shadow_only, d.state, d.history, latest=2, meta=meta,
            c=counters(2, 0, compared=10, agreed=10), now=31)  # fmt: skip
    assert d.state.stable == 2 and d.history[-1]["reason"] == "passed the shadow phase"

    both = policy(gate={"min": {"accuracy": 0.9}}, shadow={"durationSeconds": 30})
    d = run(both, RolloutState(stable=1), latest=2, meta=meta, now=0)
    d = run(both, d.state, d.history, latest=2, meta=meta,
            c=counters(2, 0, compared=10, agreed=10), now=31)  # fmt: skip
    assert d.history[-1]["reason"] == "passed the gate and the shadow phase"


@pytest.mark.parametrize("steps", [[50, 10, 100], [10, 50], [10, 10, 100], [0, 100]])
def test_bad_canary_steps_are_rejected(steps):
    with pytest.raises(ValueError):
        policy(canary={"steps": steps})


# -- metrics from the server pods --------------------------------------------------------------


POD_A = """
# TYPE kerasop_server_version_requests counter
kerasop_server_version_requests_total{version="1",role="stable",outcome="ok"} 90
kerasop_server_version_requests_total{version="2",role="candidate",outcome="ok"} 8
kerasop_server_version_requests_total{version="2",role="candidate",outcome="error"} 2
# TYPE kerasop_server_version_request_duration_seconds histogram
kerasop_server_version_request_duration_seconds_bucket{version="2",le="0.01"} 9
kerasop_server_version_request_duration_seconds_bucket{version="2",le="+Inf"} 10
kerasop_server_version_request_duration_seconds_count{version="2"} 10
kerasop_server_version_request_duration_seconds_sum{version="2"} 0.5
# TYPE kerasop_server_shadow_comparisons counter
kerasop_server_shadow_comparisons_total{version="2",result="agree"} 40
kerasop_server_shadow_comparisons_total{version="2",result="disagree"} 10
kerasop_server_shadow_comparisons_total{version="2",result="dropped"} 3
kerasop_server_shadow_comparisons_total{version="2",result="error"} 1
"""


def test_parse_server_metrics_sums_pods():
    c = parse_server_metrics([POD_A, POD_A])
    assert c[1].requests == 180 and c[1].errors == 0
    two = c[2]
    assert (two.requests, two.errors) == (20, 4)
    assert two.buckets == {"0.01": 18, "+Inf": 20}
    assert two.p99_ms() == math.inf  # 2 of 20 are slower than 10 ms
    assert (two.shadow_compared, two.shadow_agreed, two.shadow_errors) == (100, 80, 2)
    assert two.agreement() == 0.8
    assert VersionCounters.model_validate(two.to_status()) == two


def test_metric_samples_unescape_labels_and_ignore_timestamps():
    text = (
        '# HELP x_total a "quoted" help\n'
        'x_total{path="a\\\\b",msg="say \\"hi\\"\\n",brace="}"} 3 1700000000000\n'
        "\n"
        "up NaN\n"
    )
    (name, labels, value), (bare, no_labels, nan) = samples(text)
    assert (name, value) == ("x_total", 3.0)
    assert labels == {"path": "a\\b", "msg": 'say "hi"\n', "brace": "}"}
    assert (bare, no_labels, math.isnan(nan)) == ("up", {}, True)
