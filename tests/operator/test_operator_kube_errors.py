"""An API call that gets no answer (timeout, refused connection) is an ``ApiError`` like any
other failed call, so the handlers retry it instead of failing on an unexpected exception.

Real sockets, real lightkube client: a server that accepts connections and never answers,
and a port nothing listens on.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import kopf
import lightkube
import pytest
from lightkube.config.kubeconfig import KubeConfig

from kerasop_operator import handlers
from kerasop_operator import kube as k
from kerasop_operator.controller import _apply_failure
from kerasop_operator.kube import ApiError, Kube

TIMEOUT = 0.5


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def kube_at(url: str) -> Kube:
    """The operator's client for the API server at ``url``, with a short timeout."""
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )
    return Kube(lightkube.Client(config, timeout=TIMEOUT))  # type: ignore[arg-type]


CALLS = {
    "get": lambda kube: kube.get(k.POD, "ml", "p"),
    "list": lambda kube: kube.list(k.JOB, "ml", label_selector="a=b"),
    "create": lambda kube: kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ml"}}
    ),
    "merge_patch": lambda kube: kube.merge_patch(
        k.TRAINING_JOB, "ml", "j", {"status": {"phase": "Running"}}, subresource="status"
    ),
    "delete": lambda kube: kube.delete(k.SERVICE, "ml", "s"),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_no_answer_in_time_is_an_api_error(silent_server: str, call: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(ApiError) as info:
        CALLS[call](kube_at(silent_server))
    assert time.monotonic() - t0 < 10 * TIMEOUT  # the client's timeout ended it, not a hang
    err = info.value
    assert (err.status, err.reason) == (0, "ReadTimeout")
    assert err.transient and not err.not_found
    assert "ReadTimeout: no answer from the API server to " in str(err), str(err)
    assert f" {silent_server}/" in str(err), str(err)


def test_timeout_message_names_the_request(silent_server: str) -> None:
    with pytest.raises(ApiError) as info:
        kube_at(silent_server).get(k.POD, "ml", "p")
    assert str(info.value).startswith(
        f"ReadTimeout: no answer from the API server to GET {silent_server}/api/v1/namespaces/ml/pods/p: "
    ), str(info.value)


def test_refused_connection_is_an_api_error() -> None:
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ApiError) as info:
        kube_at(url).list(k.POD, "ml")
    assert (info.value.status, info.value.reason) == (0, "ConnectError")
    assert info.value.transient
    assert f"no answer from the API server to GET {url}/api/v1/namespaces/ml/pods" in str(
        info.value
    )


def test_handlers_retry_a_call_without_answer(silent_server: str) -> None:
    with pytest.raises(ApiError) as info:
        kube_at(silent_server).apply(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ml"}}
        )
    # not a failure to report in the resource's status: the write is simply retried
    assert _apply_failure(info.value) is None
    retry = handlers._retry(info.value, 30.0)
    assert isinstance(retry, kopf.TemporaryError) and retry.delay == 30.0
    assert "ApiError: ReadTimeout: no answer from the API server to PATCH" in str(retry)
