"""What the server's ``/metrics`` tells its readers: the names it exports, and their readers.

The server (kerasop_server.metrics) registers its per-version counters under these names;
the rollout's two drivers, the operator and ``kerasop serve``, read every server pod's
``/metrics`` text back into :class:`~kerasop.status.VersionCounters` with
:func:`parse_server_metrics`. The operator also reads each pod's model store error
(:func:`store_error`) into the service's ``ModelStoreReachable`` condition. Keeping both
sides here makes a renamed metric fail the tests on both sides at once.

The reader knows the Prometheus text format as prometheus_client writes it (one sample
a line: ``name{label="value",...} value``), so the core needs no Prometheus library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kerasop.status import VersionCounters, bucket_key

# Counter, labels version, outcome (ok | error).
VERSION_REQUESTS = "kerasop_server_version_requests"
# Histogram, label version.
VERSION_LATENCY = "kerasop_server_version_request_duration_seconds"
# Counter, labels version, result (agree | disagree | error | dropped).
SHADOW_COMPARISONS = "kerasop_server_shadow_comparisons"
# Gauge, labels model, reason, message: 1 while the server's last poll of the model store's
# bucket failed (no sample once the store answers again). The message names the bucket and
# the Secret, never a key (kerasop.objstore).
STORE_ERROR = "kerasop_server_model_store_error_info"

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of each sample line; comments and blank lines skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)  # a timestamp may follow the value
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        labels = {
            key: re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group()], value)
            for key, value in _LABEL.findall(match["labels"] or "")
        }
        yield match["name"], labels, float(match["value"])


def parse_server_metrics(texts: Iterable[str]) -> dict[int, VersionCounters]:
    """Sum the per-version counters of every pod's ``/metrics`` text."""
    out: dict[int, VersionCounters] = {}
    for text in texts:
        for name, labels, value in samples(text):
            version_text = labels.get("version", "")
            if not version_text.isdigit():
                continue
            c = out.setdefault(int(version_text), VersionCounters(buckets={}))
            if name == f"{VERSION_REQUESTS}_total":
                c.requests += value
                if labels.get("outcome") == "error":
                    c.errors += value
            elif name == f"{VERSION_LATENCY}_bucket":
                le = bucket_key(float(labels["le"]))
                buckets = c.buckets if c.buckets is not None else {}
                buckets[le] = buckets.get(le, 0.0) + value
                c.buckets = buckets
            elif name == f"{SHADOW_COMPARISONS}_total":
                result = labels.get("result")
                if result != "dropped":
                    c.shadow_compared += value if result != "error" else 0.0
                if result == "agree":
                    c.shadow_agreed += value
                elif result == "error":
                    c.shadow_errors += value
    return out


@dataclass(frozen=True)
class StoreError:
    """Why a server's last poll of its model store failed (``reason``: CamelCase, e.g.
    ``StorageAccessDenied``)."""

    reason: str
    message: str


def store_error(text: str) -> StoreError | None:
    """The model store error one server pod's ``/metrics`` text reports (None: none)."""
    for name, labels, value in samples(text):
        if name == STORE_ERROR and value:
            return StoreError(labels.get("reason", ""), labels.get("message", ""))
    return None
