"""periodic.py: when each tracked object's work runs (a fake clock), and the real thread."""

import threading
import time

from kerasop_operator.periodic import Periodic


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_turn_one_interval_after_tracking_then_every_interval():
    clock = Clock()
    p = Periodic("t", 10, lambda ns, n: None, 1, clock=clock)
    p.track("ns", "a", True)
    clock.now = 105
    p.track("ns", "b", True)
    p.track("ns", "a", True)  # another event for a tracked object keeps its turn
    assert p.take_due() == []
    clock.now = 110
    assert p.take_due() == [("ns", "a")]
    p._running.clear()  # as _run does when the work returns
    clock.now = 115
    assert p.take_due() == [("ns", "b")]
    p._running.clear()
    clock.now = 120
    assert p.take_due() == [("ns", "a")]


def test_a_run_still_going_is_not_started_again_and_untracked_objects_stop():
    clock = Clock()
    p = Periodic("t", 1, lambda ns, n: None, 1, clock=clock)
    p.track("ns", "a", True)
    clock.now += 1
    assert p.take_due() == [("ns", "a")]
    clock.now += 5
    assert p.take_due() == []  # the first run has not returned
    p._running.clear()
    p.track("ns", "a", False)
    clock.now += 5
    assert p.take_due() == [] and p.tracked() == []


def test_thread_runs_the_work_and_survives_a_failure():
    calls: list[tuple[str, str]] = []
    done = threading.Event()

    def work(namespace: str, name: str) -> None:
        calls.append((namespace, name))
        if len(calls) == 1:
            raise RuntimeError("API server gone")
        done.set()

    p = Periodic("t", 0.05, work, 2)
    p.track("ns", "a", True)
    p.start()
    try:
        assert done.wait(5), calls
    finally:
        p.stop()
    assert calls[:2] == [("ns", "a"), ("ns", "a")]
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n  # stopped: no more runs


def test_work_sees_the_context_variables_of_the_handler_that_tracked():
    """kopf.event() in the work reads variables kopf sets only around its handlers."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    seen: list[str] = []
    done = threading.Event()

    def work(namespace: str, name: str) -> None:
        seen.append(var.get("unset"))
        done.set()

    p = Periodic("t", 0.05, work, 1)

    def handler() -> None:
        var.set("from the handler")
        p.track("ns", "a", True)

    contextvars.copy_context().run(handler)
    p.start()
    try:
        assert done.wait(5)
    finally:
        p.stop()
    assert seen[0] == "from the handler"
