"""The closed loop: gate, shadow and canary of a new model version (pure functions).

``step()`` is the whole state machine: (policy, state, the store's latest
version, metadata, cumulative per-version counters from the server pods, now)
-> (new state, Events). The state lives in ``status.rollout`` and
``status.history``, so an operator restart resumes exactly where it was: a
promotion is a state transition out of ``Shadow``/``Canary`` that happens once,
and a version with an outcome in the history is never rolled out again by
itself.

Phases: ``Stable`` (one version takes all traffic), ``Shadow`` (the candidate
answers copies of live requests, compared with stable), ``Canary`` (the
candidate takes ``weight`` percent). Outcomes in the history: ``Promoted``,
``Refused`` (gate or shadow), ``RolledBack`` (canary limit or abort).

The server pods get ``routing(state)`` (stable, candidate, weight, shadow) and
split requests in-process (exact with one replica); they report per-version
counters that ``kerasop.server_metrics`` reads. Used by the operator and by the
local ``kerasop serve``; no Kubernetes here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kerasop.metric_direction import lower_is_better
from kerasop.spec import GateSpec, KerasTrainingJobSpec, RolloutSpec, spec_hash
from kerasop.status import VersionCounters

HISTORY_LIMIT = 50

# Annotation a person sets on the KerasModelService: "promote=N" or "abort=N" (N the
# candidate version, so a forgotten annotation never acts on a later version). The
# operator never rewrites the spec or this annotation.
ANN_ROLLOUT_ACTION = "kerasop.io/rollout"

Event = tuple[str, str, str]  # (type, reason, message)


class Phase(StrEnum):
    """Where a rollout is: one version serves, or a candidate shadows or takes a share."""

    STABLE = "Stable"
    SHADOW = "Shadow"
    CANARY = "Canary"


class Outcome(StrEnum):
    """How a version's rollout ended, as the history and the Events say it."""

    PROMOTED = "Promoted"
    REFUSED = "Refused"  # by the gate or the shadow phase
    ROLLED_BACK = "RolledBack"  # a canary limit, an abort or a pin


# --------------------------------------------------------------------------------------------
# the evaluation gate


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """``val_accuracy`` or ``accuracy``: metadata.json holds final validation metrics."""
    for key in (name, name.removeprefix("val_"), f"val_{name}"):
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def gate(
    policy: GateSpec | None,
    candidate: Mapping[str, Any],
    serving: Mapping[str, Any] | None,
) -> str | None:
    """Why the candidate's metadata fails the gate, or ``None`` when it passes."""
    if policy is None:
        return None
    new = candidate.get("metrics") or {}
    old = (serving or {}).get("metrics") or {}
    reasons: list[str] = []
    for name, floor in (policy.min or {}).items():
        value = metric_value(new, name)
        if value is None:
            reasons.append(f"{name} is not in the version's metrics")
        elif value < floor:
            reasons.append(f"{name} {value:.4g} < min {floor:g}")
    for name, ceiling in (policy.max or {}).items():
        value = metric_value(new, name)
        if value is None:
            reasons.append(f"{name} is not in the version's metrics")
        elif value > ceiling:
            reasons.append(f"{name} {value:.4g} > max {ceiling:g}")
    if serving is not None:
        for name, margin in (policy.max_regression or {}).items():
            value, before = metric_value(new, name), metric_value(old, name)
            if value is None or before is None:
                if value is None:
                    reasons.append(f"{name} is not in the version's metrics")
                continue  # nothing to compare against
            worse = value - before if lower_is_better(name) else before - value
            if worse > margin:
                reasons.append(
                    f"{name} {value:.4g} is {worse:.4g} worse than serving {before:.4g}"
                    f" (maxRegression {margin:g})"
                )
    return "; ".join(reasons) or None


# --------------------------------------------------------------------------------------------
# per-version counters read from the server pods


Counters = dict[int, VersionCounters]

# --------------------------------------------------------------------------------------------
# state


@dataclass
class RolloutState:
    """``status.rollout``: enough to resume after a restart."""

    phase: Phase = Phase.STABLE
    stable: int | None = None
    candidate: int | None = None
    step: int = 0  # index into canary.steps
    weight: int = 0  # percent of requests to the candidate
    phase_started: float = 0.0  # unix seconds: when the current step/shadow began
    baseline: Counters = field(default_factory=dict)  # counters at phase_started
    last: Outcome | None = None  # of the last rollout
    message: str = ""

    @property
    def summary(self) -> str:
        """The printer column: ``Canary 10%``, ``Shadow``, ``RolledBack``, ``Stable``."""
        if self.phase is Phase.CANARY:
            return f"Canary {self.weight}%"
        if self.phase is Phase.SHADOW:
            return "Shadow"
        return str(self.last) if self.last in (Outcome.REFUSED, Outcome.ROLLED_BACK) else "Stable"

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.summary,
            "phase": str(self.phase),
            "step": self.step,
            "weight": self.weight,
            "phaseStarted": self.phase_started,
            "baseline": {str(v): c.to_status() for v, c in self.baseline.items()},
        }
        for key, value in (
            ("stable", self.stable),
            ("candidate", self.candidate),
            ("last", str(self.last) if self.last else None),
            ("message", self.message),
        ):
            if value not in (None, ""):
                out[key] = value
        return out

    @classmethod
    def from_status(cls, d: Mapping[str, Any] | None) -> RolloutState:
        d = d or {}
        return cls(
            phase=Phase(d.get("phase") or Phase.STABLE),
            stable=d.get("stable"),
            candidate=d.get("candidate"),
            step=int(d.get("step") or 0),
            weight=int(d.get("weight") or 0),
            phase_started=float(d.get("phaseStarted") or 0.0),
            baseline={
                int(v): VersionCounters.model_validate(c)
                for v, c in (d.get("baseline") or {}).items()
            },
            last=Outcome(d["last"]) if d.get("last") else None,
            message=d.get("message") or "",
        )


def routing(state: RolloutState) -> dict[str, Any]:
    """What the server pods do: the contract of the server's rollout file."""
    return {
        "stable": state.stable,
        "candidate": state.candidate if state.phase is not Phase.STABLE else None,
        "weight": state.weight if state.phase is Phase.CANARY else 0,
        "shadow": state.phase is Phase.SHADOW,
    }


def replacing(old: Any, new: Any) -> Any:
    """``new`` as a JSON merge patch over ``old``: keys that went away become ``None``.

    (A merge patch keeps keys it does not name; the rollout's nested dicts must shrink.)
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out = {k: None for k in old if k not in new}
    out.update({k: replacing(old.get(k), v) for k, v in new.items()})
    return out


# --------------------------------------------------------------------------------------------
# history


def history_entry(version: int, metadata: Mapping[str, Any], now: str) -> dict[str, Any]:
    """What the history keeps of a version: lineage and metrics."""
    lineage = metadata.get("lineage") or {}
    entry: dict[str, Any] = {"version": version, "seenAt": now}
    for key in ("job", "specHash", "dataFingerprint"):
        if lineage.get(key):
            entry[key] = str(lineage[key])
    metrics = {
        k: float(v)
        for k, v in (metadata.get("metrics") or {}).items()
        if isinstance(v, int | float) and math.isfinite(v)
    }
    if metrics:
        entry["metrics"] = metrics
    formats = metadata.get("modelFormats")
    if isinstance(formats, list) and formats:  # which image can serve it
        entry["modelFormats"] = [str(f) for f in formats][:8]
    return entry


def record(
    history: list[dict[str, Any]],
    version: int,
    outcome: Outcome,
    reason: str,
    now: str,
    metadata: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The history with ``version``'s outcome set (the entry is created when missing)."""
    out = [dict(e) for e in history]
    entry = next((e for e in out if e.get("version") == version), None)
    if entry is None:
        entry = history_entry(version, metadata or {}, now)
        out.append(entry)
    entry.update(outcome=str(outcome), reason=reason[:1024], at=now)
    out.sort(key=lambda e: e["version"])
    return out[-HISTORY_LIMIT:]


def outcome_of(history: Iterable[Mapping[str, Any]], version: int) -> str | None:
    return next((e.get("outcome") for e in history if e.get("version") == version), None)


# --------------------------------------------------------------------------------------------
# the state machine


@dataclass
class Manual:
    """A person's instruction: spec.rollout.promote/abort or the annotation (a version each)."""

    promote: int | None = None
    abort: int | None = None

    def wants(self, verb: str, candidate: int | None) -> bool:
        named = self.promote if verb == "promote" else self.abort
        return candidate is not None and named == candidate

    @classmethod
    def of(cls, policy: RolloutSpec | None, annotations: Mapping[str, str] | None) -> Manual:
        """The spec's fields, else the annotation ``promote=N`` / ``abort=N``."""
        verb, _, number = ((annotations or {}).get(ANN_ROLLOUT_ACTION) or "").partition("=")
        named = int(number) if number.strip().isdigit() else None
        return cls(
            promote=(policy.promote if policy else None) or (named if verb == "promote" else None),
            abort=(policy.abort if policy else None) or (named if verb == "abort" else None),
        )


def job_metadata(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the gate and the history know of a job's latest version (from its status)."""
    st = job.get("status") or {}
    try:  # the same hash the trainer writes into metadata.json
        digest: str | None = spec_hash(KerasTrainingJobSpec.model_validate(job.get("spec") or {}))
    except ValueError:
        digest = None
    lineage = {
        "job": (job.get("metadata") or {}).get("name"),
        "specHash": digest,
        "dataFingerprint": st.get("dataFingerprint"),
    }
    return {
        "metrics": st.get("finalMetrics") or {},
        "lineage": lineage,
        "modelFormats": st.get("modelFormats"),
    }


def known_metadata(
    history: Iterable[Mapping[str, Any]], latest: int | None, latest_metadata: Mapping[str, Any]
) -> dict[int, Mapping[str, Any]]:
    """Metrics of every version in the history, plus the latest version's metadata."""
    out: dict[int, Mapping[str, Any]] = {
        int(e["version"]): {"metrics": e.get("metrics") or {}} for e in history
    }
    if latest is not None:
        out[latest] = latest_metadata
    return out


@dataclass
class Decision:
    state: RolloutState
    history: list[dict[str, Any]]
    events: list[Event]


class _Reconcile:
    """One pass of the state machine over a copy of the state: one method per situation.

    ``finish`` is the only way a candidate leaves ``Shadow``/``Canary``, and the only
    place ``stable`` moves to a rolled-out version: a promotion happens there, once.
    """

    def __init__(
        self,
        policy: RolloutSpec | None,
        state: RolloutState,
        history: list[dict[str, Any]],
        metadata: Mapping[int, Mapping[str, Any]],
        counters: Counters,
        now: float,
        now_text: str,
    ) -> None:
        self.policy = policy
        self.s = RolloutState(**{**state.__dict__, "baseline": dict(state.baseline)})
        self.history = history
        self.metadata = metadata
        self.counters = counters
        self.now, self.now_text = now, now_text
        self.events: list[Event] = []

    def decision(self) -> Decision:
        return Decision(self.s, self.history, self.events)

    def meta(self, version: int | None) -> Mapping[str, Any]:
        return self.metadata.get(version, {}) if version is not None else {}

    def record(self, version: int, outcome: Outcome, reason: str) -> None:
        self.history = record(
            self.history, version, outcome, reason, self.now_text, self.meta(version)
        )

    def finish(self, outcome: Outcome, reason: str) -> None:
        s = self.s
        assert s.candidate is not None
        version = s.candidate
        self.record(version, outcome, reason)
        promoted = outcome is Outcome.PROMOTED
        if promoted:
            s.stable = version
        self.events.append(
            (
                "Normal" if promoted else "Warning",
                str(outcome),
                f"version {version} {outcome.lower()}: {reason}"
                + (f"; serving version {s.stable}" if s.stable is not None else ""),
            )
        )
        s.phase, s.candidate, s.step, s.weight = Phase.STABLE, None, 0, 0
        s.baseline, s.phase_started, s.last, s.message = {}, self.now, outcome, reason

    def enter(self, phase: Phase, step_index: int = 0) -> None:
        s, canary = self.s, self.policy.canary if self.policy else None
        s.phase, s.step, s.phase_started = phase, step_index, self.now
        s.weight = canary.steps[step_index] if phase is Phase.CANARY and canary else 0
        s.baseline = {v: c for v, c in self.counters.items() if v in (s.stable, s.candidate)}
        s.message = (
            f"shadowing version {s.candidate}"
            if phase is Phase.SHADOW
            else f"canary version {s.candidate} at {s.weight}%"
        )

    def after_shadow(self, shadowed: bool) -> None:
        if self.policy is not None and self.policy.canary is not None:
            self.enter(Phase.CANARY, 0)
            self.events.append(
                ("Normal", "Canary", f"version {self.s.candidate}: {self.s.weight}% of requests")
            )
        else:
            self.finish(Outcome.PROMOTED, promotion_reason(self.policy, shadowed))

    def pin(self, pinned: int) -> None:
        """A pinned version is served as is: no gate, no canary (a person decided)."""
        s = self.s
        if s.candidate is not None and s.candidate != pinned:
            self.finish(Outcome.ROLLED_BACK, f"version {pinned} was pinned")
        if s.stable != pinned:
            self.record(pinned, Outcome.PROMOTED, "pinned in spec.model.version")
            self.events.append(("Normal", "Promoted", f"version {pinned} pinned"))
            s.stable, s.phase, s.candidate, s.weight = pinned, Phase.STABLE, None, 0
            s.last = Outcome.PROMOTED

    def first_version(self, latest: int) -> None:
        """Nothing to compare with: it serves (the gate's floors still apply)."""
        s = self.s
        reason = gate(self.policy.gate if self.policy else None, self.meta(latest), None)
        if reason is None:
            self.record(latest, Outcome.PROMOTED, "first version")
            s.stable, s.last, s.message = latest, Outcome.PROMOTED, f"serving version {latest}"
            self.events.append(("Normal", "Promoted", f"version {latest} is the first version"))
        elif outcome_of(self.history, latest) != Outcome.REFUSED:
            self.record(latest, Outcome.REFUSED, reason)
            s.last, s.message = Outcome.REFUSED, f"version {latest}: {reason}"
            self.events.append(
                ("Warning", "Refused", f"version {latest} refused by the gate: {reason}")
            )

    def is_new(self, latest: int | None) -> bool:
        """A newer version than stable that has not been rolled out yet.

        Refused and rolled-back versions are never retried by themselves (a promoted one
        is, after a pin to an older version was removed).
        """
        s = self.s
        return (
            s.candidate is None
            and latest is not None
            and s.stable is not None
            and latest > s.stable
            and outcome_of(self.history, latest) in (None, Outcome.PROMOTED)
        )

    def start(self, latest: int) -> None:
        """Gate the new version, then shadow, canary or promote it."""
        s = self.s
        s.candidate = latest
        reason = gate(
            self.policy.gate if self.policy else None, self.meta(latest), self.meta(s.stable)
        )
        if reason is not None:
            self.finish(Outcome.REFUSED, f"gate: {reason}")
        elif self.policy is not None and self.policy.shadow is not None:
            self.enter(Phase.SHADOW)
            self.events.append(("Normal", "Shadow", f"version {latest} shadows live requests"))
        else:
            self.after_shadow(shadowed=False)

    def window(self) -> tuple[VersionCounters, float]:
        """The candidate's counters since the phase began, and the seconds it has run.

        The pods pick up a new plan some time after it is written (a ConfigMap volume: up
        to about a minute): until the candidate has answered something in this phase, the
        dwell has not begun.
        """
        s = self.s
        assert s.candidate is not None
        window = self.counters.get(s.candidate, VersionCounters()).since(
            s.baseline.get(s.candidate)
        )
        shadow = self.policy.shadow if self.policy is not None else None
        canary = self.policy.canary if self.policy is not None else None
        untouched = (
            (s.phase == Phase.SHADOW and shadow is not None and shadow.min_requests > 0
             and window.shadow_compared + window.shadow_errors == 0)
            or (s.phase == Phase.CANARY and canary is not None and canary.min_requests > 0
                and window.requests == 0)
        )  # fmt: skip
        if untouched:
            s.phase_started = self.now
        return window, self.now - s.phase_started

    def shadow(self, window: VersionCounters, elapsed: float) -> None:
        s = self.s
        shadow = self.policy.shadow if self.policy is not None else None
        if shadow is None:  # the policy changed under us: go on without it
            self.after_shadow(shadowed=False)
            return
        agreement = window.agreement()
        s.message = f"shadowing version {s.candidate}: {int(window.shadow_compared)} compared" + (
            f", agreement {agreement:.3f}" if agreement is not None else ""
        )
        tried = window.shadow_compared + window.shadow_errors
        if tried and window.shadow_errors / tried > shadow.max_error_rate:
            self.finish(
                Outcome.REFUSED,
                f"shadow errors {int(window.shadow_errors)} of {int(tried)} copies"
                f" > maxErrorRate {shadow.max_error_rate:g}",
            )
        elif elapsed >= shadow.duration_seconds and window.shadow_compared >= shadow.min_requests:
            if (
                shadow.min_agreement is not None
                and agreement is not None
                and agreement < shadow.min_agreement
            ):
                self.finish(
                    Outcome.REFUSED,
                    f"shadow agreement {agreement:.3f} < minAgreement {shadow.min_agreement:g}",
                )
            else:
                self.after_shadow(shadowed=True)

    def canary(self, window: VersionCounters, elapsed: float) -> None:
        s = self.s
        canary = self.policy.canary if self.policy is not None else None
        if canary is None:
            self.finish(Outcome.PROMOTED, "the canary policy was removed")
            return
        breach = canary_breach(canary, window, self.counters, s)
        if breach is not None:
            self.finish(Outcome.ROLLED_BACK, breach)
            return
        s.message = (
            f"canary version {s.candidate} at {s.weight}%: {int(window.requests)} requests,"
            f" {int(window.errors)} errors"
        )
        if elapsed >= canary.dwell_seconds and window.requests >= canary.min_requests:
            if s.step + 1 < len(canary.steps):
                self.enter(Phase.CANARY, s.step + 1)
                self.events.append(
                    ("Normal", "Canary", f"version {s.candidate}: {s.weight}% of requests")
                )
            else:
                self.finish(Outcome.PROMOTED, "walked through every canary step")


def step(
    policy: RolloutSpec | None,
    state: RolloutState,
    history: list[dict[str, Any]],
    *,
    latest: int | None,
    metadata: Mapping[int, Mapping[str, Any]],
    counters: Counters,
    now: float,
    now_text: str,
    pinned: int | None = None,
    manual: Manual | None = None,
) -> Decision:
    """One reconcile of the rollout: pure, idempotent for the same inputs."""
    manual = manual or Manual()
    r = _Reconcile(policy, state, history, metadata, counters, now, now_text)
    s = r.s
    if pinned is not None:
        r.pin(pinned)
    elif s.stable is None and s.candidate is None and latest is not None:
        r.first_version(latest)
    elif r.is_new(latest):
        assert latest is not None
        r.start(latest)
    elif s.candidate is None:
        pass
    elif manual.wants("abort", s.candidate):  # a person's instruction comes first
        r.finish(Outcome.ROLLED_BACK, "aborted by a person")
    elif manual.wants("promote", s.candidate):
        r.finish(Outcome.PROMOTED, "promoted by a person")
    elif s.phase == Phase.SHADOW:
        r.shadow(*r.window())
    elif s.phase == Phase.CANARY:
        r.canary(*r.window())
    return r.decision()


def promotion_reason(policy: RolloutSpec | None, shadowed: bool) -> str:
    """Why a version is promoted without a canary, naming only the checks that ran."""
    passed = (["the gate"] if policy is not None and policy.gate is not None else []) + (
        ["the shadow phase"] if shadowed else []
    )
    if passed:
        return "passed " + " and ".join(passed)
    return "no gate, shadow or canary is configured"


def canary_breach(
    canary: Any, window: VersionCounters, counters: Counters, s: RolloutState
) -> str | None:
    """Why the canary's window breaks a limit, or ``None``."""
    if window.requests and window.error_rate() > canary.max_error_rate:
        return (
            f"error rate {window.error_rate():.3f} > maxErrorRate {canary.max_error_rate:g}"
            f" ({int(window.errors)} of {int(window.requests)} requests)"
        )
    p99 = window.p99_ms()
    if p99 is not None and canary.max_p99_ms is not None and p99 > canary.max_p99_ms:
        return f"p99 {p99:g} ms > maxP99Ms {canary.max_p99_ms:g}"
    if p99 is not None and canary.max_p99_ratio is not None and s.stable is not None:
        stable_window = counters.get(s.stable, VersionCounters()).since(s.baseline.get(s.stable))
        stable_p99 = stable_window.p99_ms()
        if stable_p99 and p99 > stable_p99 * canary.max_p99_ratio:
            return f"p99 {p99:g} ms > {canary.max_p99_ratio:g} x stable p99 {stable_p99:g} ms"
    return None
