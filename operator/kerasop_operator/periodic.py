"""Periodic work on the objects that need it, without kopf timers.

A kopf timer makes kopf put a finalizer on the object first, in a round trip of its own
(patch, then wait for the patched object to come back through the watch) before any create
handler runs: every new KerasTrainingJob waited for it before its trainer Job was created
(bench/pod_startup.py, the operator's share of apply -> Running). Here the handlers only say
which objects are active (from the watch events they get anyway) and one thread runs the work
for each active object every ``interval`` seconds, a few at a time on a small thread pool.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class Periodic:
    """Runs ``work(namespace, name)`` every ``interval`` s for each tracked object.

    An object's first run comes one interval after it is first tracked as active; a run
    still going when the next is due is not started twice; failures are logged and the
    object is tried again at its next turn.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[str, str], None],
        workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._workers = workers
        self._clock = clock
        self._due: dict[Key, float] = {}  # active object -> when its next run is due
        self._running: set[Key] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._context: contextvars.Context | None = None

    def track(self, namespace: str, name: str, active: bool) -> None:
        """The object's latest state from a watch event: does it need the periodic work?"""
        key = (namespace, name)
        with self._lock:
            if self._context is None:
                # The work may post Events with kopf.event(), which reads kopf's context
                # variables (its settings, its event queue); kopf sets them only around
                # handlers, and this is called from one: the work runs in copies of it.
                self._context = contextvars.copy_context()
            if not active:
                self._due.pop(key, None)
            elif key not in self._due:
                self._due[key] = self._clock() + self.interval

    def tracked(self) -> list[Key]:
        with self._lock:
            return sorted(self._due)

    def take_due(self) -> list[Key]:
        """The objects whose turn has come (and are not running); their next turn is set."""
        now = self._clock()
        with self._lock:
            due = [k for k, t in self._due.items() if t <= now and k not in self._running]
            for key in due:
                self._due[key] = now + self.interval
                self._running.add(key)
        return due

    def start(self) -> None:
        if self._thread is not None:  # kopf retries a start-up handler that failed
            return
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self.name)
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        assert self._pool is not None
        tick = min(1.0, self.interval)
        while not self._stop.wait(tick):
            for key in self.take_due():
                self._pool.submit(self._run, key)

    def _run(self, key: Key) -> None:
        context = self._context.copy() if self._context else contextvars.copy_context()
        try:
            context.run(self._work, *key)
        except Exception:  # the next turn tries again; the thread must not die
            logger.exception("%s of %s/%s failed", self.name, *key)
        finally:
            with self._lock:
                self._running.discard(key)
