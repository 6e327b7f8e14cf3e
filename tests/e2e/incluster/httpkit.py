"""Tiny HTTP client (standard library only) shared by the in-cluster scripts.

These files are mounted into pods of the runtime image from a ConfigMap (``/scripts``);
they are not collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import time
from typing import Any


def call(
    host: str, port: int, method: str, path: str, body: Any = None, timeout: float = 15.0
) -> tuple[int, Any]:
    """One request on a fresh connection; returns (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = (
            {"Content-Type": "application/json", "Connection": "close"}
            if payload
            else {"Connection": "close"}
        )
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            parsed: Any = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return resp.status, parsed
    finally:
        conn.close()


def csv_rows(path: str, rows: int, label: str = "label") -> list[list[float]]:
    out: list[list[float]] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name != label]
        for row in reader:
            out.append([float(row[i]) for i in keep])
            if len(out) >= rows:
                break
    return out


def v1_body(rows: list[list[float]]) -> dict[str, Any]:
    return {"instances": rows}


def v2_body(rows: list[list[float]], name: str = "input") -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    return {
        "inputs": [
            {"name": name, "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": flat}
        ]
    }


def v1_values(resp: Any) -> list[float]:
    return [
        float(v) for row in resp["predictions"] for v in (row if isinstance(row, list) else [row])
    ]


def v2_values(resp: Any) -> list[float]:
    return [float(v) for v in resp["outputs"][0]["data"]]


def wait_ready(host: str, port: int, model: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = call(host, port, "GET", f"/v2/models/{model}/ready", timeout=5)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"model {model} not ready at {host}:{port} after {timeout}s")
        time.sleep(1)


def server_parser() -> argparse.ArgumentParser:
    """The arguments every check script takes: where the server is, which model it serves."""
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--model", required=True)
    p.add_argument("--model-dir", required=True)
    return p
