"""The in-flight gauge an HPA may scale on: real server, real HTTP clients holding requests open.

A request is held by sending its body in two parts and pausing between them: the server has
the request (headers read, handler running) but not yet the whole body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from serverkit import DENSE, metric_samples, rows

from tests.support.waiting import wait_for

V1 = f"/v1/models/{DENSE}:predict"
V2 = f"/v2/models/{DENSE}/infer"
GAUGE = "kerasop_server_requests_in_flight"


def in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return metric_samples(text, GAUGE)[(("model", DENSE),)]


def held_body(body: bytes, release: threading.Event) -> Iterator[bytes]:
    half = len(body) // 2
    yield body[:half]
    release.wait(30)
    yield body[half:]


def test_gauge_counts_held_requests_and_falls_after(dense_server, dense_local) -> None:
    url = dense_server.url
    assert in_flight(url) == 0
    x = rows(1, seed=5)
    bodies = {
        V1: json.dumps({"instances": x.tolist()}).encode(),
        V2: json.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 784],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        ).encode(),
    }
    paths = [V2, V2, V1]
    release = threading.Event()
    answers: list[httpx.Response] = []

    def client(path: str) -> None:
        answers.append(
            httpx.post(
                url + path,
                content=held_body(bodies[path], release),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=client, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    try:
        wait_for("3 requests in flight", lambda: in_flight(url) == 3, timeout=30)
        # Other requests (health, metrics) are not counted, and a held request stays counted.
        httpx.get(url + "/v2/health/ready").raise_for_status()
        assert in_flight(url) == 3
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert sorted(r.status_code for r in answers) == [200, 200, 200]
    expected = dense_local.predict(x, verbose=0)
    v1 = next(r.json() for r in answers if "predictions" in r.json())
    np.testing.assert_allclose(v1["predictions"], expected, atol=1e-5)
    wait_for("no request in flight", lambda: in_flight(url) == 0, timeout=10)


def test_gauge_falls_after_a_refused_request(dense_server) -> None:
    r = httpx.post(dense_server.url + V1, content=b"{not json")
    assert r.status_code == 400 and "error" in r.json()
    assert in_flight(dense_server.url) == 0


@pytest.mark.parametrize("path", [V1, V2])
def test_gauge_falls_after_a_client_gives_up(dense_server, path) -> None:
    """A client that disconnects mid-body leaves no request counted forever."""
    import socket

    host, port = "127.0.0.1", dense_server.port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            'Content-Length: 1000\r\n\r\n{"instances": ['.encode()
        )
        wait_for("the held request counted", lambda: in_flight(dense_server.url) == 1)
    wait_for("the abandoned request released", lambda: in_flight(dense_server.url) == 0)
