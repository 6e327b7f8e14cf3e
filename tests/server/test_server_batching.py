"""Dynamic batching: the Batcher itself, and batches > 1 forming over HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest
from serverkit import DENSE, batch_histogram, rows, running_server

from kerasop_server import batching
from kerasop_server.batching import Batcher, BatcherClosed, ModelError

# --------------------------------------------------------------------------
# The Batcher (a numpy function stands in for the model: the merging logic
# does not care what computes the rows)
# --------------------------------------------------------------------------


def run_batcher(fn, requests, *, max_batch_size=8, timeout=0.01, delay=0.0):
    """Submit ``requests`` concurrently; returns (results, batch sizes)."""
    sizes: list[int] = []

    def predict(x):
        time.sleep(delay)
        return fn(x)

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(
                predict,
                max_batch_size=max_batch_size,
                timeout=timeout,
                executor=pool,
                observe=lambda n, s, w: sizes.append(n),
            )
            batcher.start()
            results = await asyncio.gather(
                *(batcher.submit(r) for r in requests), return_exceptions=True
            )
            await batcher.close()
            return results

    return asyncio.run(main()), sizes


def test_requests_are_merged_and_answers_routed_back() -> None:
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 4)), 3)).astype("float32") for _ in range(40)]
    results, sizes = run_batcher(lambda x: x.sum(axis=1, keepdims=True) * 2, requests)
    for req, res in zip(requests, results, strict=True):
        np.testing.assert_allclose(res, req.sum(axis=1, keepdims=True) * 2, rtol=1e-6)
    assert sum(sizes) == sum(len(r) for r in requests)
    assert max(sizes) <= 8
    assert len(sizes) < len(requests)  # merged


def test_request_larger_than_max_runs_alone_and_max_one_never_merges() -> None:
    requests = [np.ones((20, 2)), np.ones((1, 2)), np.ones((1, 2))]
    _, sizes = run_batcher(lambda x: x[:, :1], requests, max_batch_size=8)
    assert 20 in sizes
    _, sizes = run_batcher(
        lambda x: x[:, :1], [np.ones((1, 2))] * 10, max_batch_size=1, timeout=0.05
    )
    assert sizes == [1] * 10


def test_busy_model_batches_even_without_timeout() -> None:
    # While one call runs, requests queue up; the next call takes them all.
    _, sizes = run_batcher(lambda x: x, [np.ones((1, 1))] * 30, timeout=0.0, delay=0.01)
    assert max(sizes) > 1


def test_lone_request_does_not_wait_for_the_window() -> None:
    """Nothing else in flight: the batch runs at once, not after the timeout."""
    started = time.perf_counter()
    results, sizes = run_batcher(lambda x: x * 2, [np.ones((1, 1))], timeout=5.0)
    assert time.perf_counter() - started < 2.0
    np.testing.assert_array_equal(results[0], 2 * np.ones((1, 1)))
    assert sizes == [1]


def test_window_waits_for_a_request_on_its_way_in() -> None:
    """A request announced with arriving() (body being read) joins the batch."""

    async def main():
        sizes: list[int] = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            b = Batcher(
                lambda x: x, max_batch_size=8, timeout=5.0, executor=pool,
                observe=lambda n, s, w: sizes.append(n),
            )  # fmt: skip
            b.start()

            async def late_request():
                with b.arriving():
                    await asyncio.sleep(0.05)  # reading the body
                return await b.submit(np.ones((1, 1)))

            late = asyncio.ensure_future(late_request())
            await asyncio.sleep(0.01)
            started = time.perf_counter()
            first = await b.submit(np.zeros((1, 1)))
            waited = time.perf_counter() - started
            await late
            await b.close()
        return sizes, waited, first

    sizes, waited, first = asyncio.run(main())
    assert sizes == [2]  # merged
    assert 0.02 < waited < 2.0  # waited for the late one, not for the whole window
    np.testing.assert_array_equal(first, np.zeros((1, 1)))


def threads_of_calls(
    scenario: Callable[[Batcher], Awaitable[None]], *, max_batch_size: int = 1, delay: float = 0.0
) -> list[str]:
    """The thread each model call ran on, in order, while ``scenario`` submitted requests to a
    batcher with one inference thread ("infer...") and a model taking ``delay`` seconds."""
    names: list[str] = []

    def predict(x):
        time.sleep(delay)
        names.append(threading.current_thread().name)
        return x

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="infer") as pool:
            b = Batcher(predict, max_batch_size=max_batch_size, timeout=0, executor=pool)
            b.start()
            await scenario(b)
            await b.close()

    asyncio.run(main())
    return names


async def three_in_turn(b: Batcher) -> None:
    for _ in range(3):
        await b.submit(np.ones((1, 1)))


def test_fast_model_runs_on_the_loop_slow_one_on_the_inference_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wide threshold, so that a busy machine cannot make the instant model look slow.
    monkeypatch.setattr(batching, "INLINE_SECONDS", 0.05)
    monkeypatch.setattr(batching, "LONE_INLINE_SECONDS", 0.05)  # 0.1 s is slow for both rules
    # The first call measures the model on the inference thread; fast calls then stay inline.
    fast = threads_of_calls(three_in_turn)
    assert fast[0].startswith("infer") and fast[1:] == [threading.current_thread().name] * 2
    assert all(n.startswith("infer") for n in threads_of_calls(three_in_turn, delay=0.1))


def test_lone_request_runs_on_the_loop_queued_ones_on_the_inference_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request with nothing else queued runs inline up to LONE_INLINE_SECONDS; one with
    others waiting behind it goes to the inference thread, so the loop keeps taking them in."""
    monkeypatch.setattr(batching, "INLINE_SECONDS", 0.0)  # only the lone rule can inline
    monkeypatch.setattr(batching, "LONE_INLINE_SECONDS", 1.0)  # "fast", even on a busy machine

    async def scenario(b: Batcher) -> None:
        await b.submit(np.ones((1, 1)))  # measured on the thread
        await b.submit(np.ones((1, 1)))  # lone: inline
        # Two at once: the first has the second queued behind it, the second is lone.
        await asyncio.gather(b.submit(np.ones((1, 1))), b.submit(np.ones((1, 1))))

    names = threads_of_calls(scenario)
    loop_thread = threading.current_thread().name
    assert names[0].startswith("infer") and names[1] == loop_thread
    assert names[2].startswith("infer") and names[3] == loop_thread and len(names) == 4


def test_background_work_never_runs_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shadow copies (background) go to the inference thread even when the model is fast
    enough to run inline, and so does a batch that merges them with a live request."""
    monkeypatch.setattr(batching, "INLINE_SECONDS", 1.0)  # "fast", even on a busy machine

    async def scenario(b: Batcher) -> None:
        await b.submit(np.ones((1, 1)))  # measured: fast, later live calls run inline
        await b.submit(np.ones((1, 1)))
        await b.submit(np.ones((1, 1)), background=True)
        await asyncio.gather(b.submit(np.ones((1, 1)), background=True), b.submit(np.ones((1, 1))))

    names = threads_of_calls(scenario, max_batch_size=4)
    loop_thread = threading.current_thread().name
    assert names[1] == loop_thread  # the fast path is on
    assert names[2].startswith("infer") and names[3].startswith("infer") and len(names) == 4


def test_model_error_fails_only_its_batch() -> None:
    def fn(x):
        if np.any(x < 0):
            raise ValueError("negative")
        return x

    results, _ = run_batcher(fn, [np.ones((1, 1)), -np.ones((1, 1))], max_batch_size=1)
    np.testing.assert_array_equal(results[0], np.ones((1, 1)))
    assert isinstance(results[1], ModelError) and "negative" in str(results[1])
    results, _ = run_batcher(lambda x: x[:1], [np.ones((2, 1))])  # wrong row count
    assert isinstance(results[0], ModelError)


def test_closed_batcher_refuses_and_cancelled_requests_are_skipped() -> None:
    started = threading.Event()

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            calls = []

            def predict(x):
                calls.append(len(x))
                started.set()
                time.sleep(0.05)
                return x

            b = Batcher(predict, max_batch_size=1, timeout=0, executor=pool)
            b.start()
            first = asyncio.ensure_future(b.submit(np.ones((1, 1))))
            await asyncio.sleep(0.01)
            skipped = asyncio.ensure_future(b.submit(np.ones((1, 1)) * 2))
            await asyncio.sleep(0)
            skipped.cancel()
            await first
            await asyncio.sleep(0.1)
            await b.close()
            with pytest.raises(BatcherClosed):
                await b.submit(np.ones((1, 1)))
            return calls

    assert asyncio.run(main()) == [1]


# --------------------------------------------------------------------------
# Over HTTP
# --------------------------------------------------------------------------


async def hammer(url: str, clients: int, per_client: int, x: np.ndarray) -> list[tuple[int, list]]:
    """``clients`` concurrent loops, each posting one row ``per_client`` times."""
    results: list[tuple[int, list]] = []
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=clients)
    ) as client:

        async def loop(c: int) -> None:
            for k in range(per_client):
                i = (c * per_client + k) % len(x)
                r = await client.post(url, json={"instances": x[i : i + 1].tolist()})
                results.append((i, r.status_code, r.json()))

        await asyncio.gather(*(loop(c) for c in range(clients)))
    return results


@pytest.mark.parametrize(
    ("max_batch", "timeout_ms"), [(32, 20.0), (1, 20.0)], ids=["batching", "no-merging"]
)
def test_concurrent_requests_form_batches(dense_store, dense_local, max_batch, timeout_ms) -> None:
    from kerasop_server.engines import load_engine

    class Busy:
        """The real engine, slowed to 20 ms per call: the batcher never waits
        when nothing else is in flight, so batches form while the model is busy.
        (At 5 ms a loaded 2-core machine's client, in this process, sent barely
        two requests per model call: mean batch 1.97.)"""

        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            return getattr(self._engine, name)

        def predict(self, batch):
            time.sleep(0.02)
            return self._engine.predict(batch)

    def factory(kind, path, threads=0):
        return Busy(load_engine(kind, path, threads=threads))

    x = rows(64, seed=41)
    expected = dense_local.predict(x, verbose=0)
    with running_server(
        dense_store,
        DENSE,
        engine_factory=factory,
        max_batch_size=max_batch,
        batch_timeout_ms=timeout_ms,
    ) as server:
        before = batch_histogram(httpx.get(f"{server.url}/metrics").text)
        results = asyncio.run(hammer(f"{server.url}/v1/models/{DENSE}:predict", 32, 4, x))
        calls, total, ones = (
            a - b
            for a, b in zip(
                batch_histogram(httpx.get(f"{server.url}/metrics").text), before, strict=True
            )
        )
    assert [code for _, code, _ in results] == [200] * 128
    for i, _, body in results:  # every answer belongs to its own request
        np.testing.assert_allclose(body["predictions"], expected[i : i + 1], atol=1e-5)
    assert total == 128
    if max_batch == 1:
        assert calls == 128 and ones == 128
    else:
        assert calls < 128, "no request was merged"
        assert ones < calls, "no model call had more than one row"
        assert total / calls > 2  # mean batch size
