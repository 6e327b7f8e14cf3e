"""The cost of serving a model that takes strings (Keras engine) against a numeric one (ONNX).

    python bench/serving_raw_inputs.py [--duration 6] [--concurrency 1,8]

Trains two tiny models on the sample customer table with the real trainer: ``churn``
(age, monthly_spend and the string columns city and plan: StringLookup inside, no
model.onnx, so ``--engine auto`` serves it with Keras) and ``numeric`` (age and
monthly_spend only: model.onnx, served by ONNX Runtime). Each is served by
``kerasop-serve`` (subprocess, 127.0.0.1, default batching) and loaded with one-row
v1 ``instances`` requests at each concurrency (closed loop, the load helpers of
serving_load.py). Prints req/s, p50 and p90 per model and concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_load import REPO, load, start_server, wait_ready

MODELS = {
    # name: (feature columns, one raw row in that order, data.normalize)
    "churn": (["age", "monthly_spend", "city", "plan"], [34, 59.9, "berlin", "basic"], True),
    # normalize off: the trainer's model.onnx of a Normalization layer has the layer's
    # mean and variance as extra graph inputs, so ONNX Runtime could not serve it (auto
    # would fall back to Keras too and there would be nothing to compare).
    "numeric": (["age", "monthly_spend"], [34, 59.9], False),
}


def train(data: Path, store: Path) -> None:
    sys.path.insert(0, str(REPO / "trainer"))
    from kerasop.spec import KerasTrainingJob
    from kerasop_trainer import sample_data
    from kerasop_trainer.train import run

    sample_data.write_mixed_csv(data / "mixed.csv", rows=400)
    for name, (columns, _, normalize) in MODELS.items():
        job = KerasTrainingJob.model_validate(
            {
                "apiVersion": "kerasop.io/v1alpha1",
                "kind": "KerasTrainingJob",
                "metadata": {"name": name},
                "spec": {
                    "data": {"format": "csv", "path": "mixed.csv", "labelColumn": "churn",
                             "featureColumns": columns, "validationSplit": 0.2,
                             "normalize": normalize},
                    "model": {"layers": [{"type": "Dense", "units": 16, "activation": "relu"},
                                         {"type": "Dense", "units": 1, "activation": "sigmoid"}]},
                    "training": {"epochs": 2, "seed": 1},
                },
            }
        )  # fmt: skip
        run(job, data, store, f"{name}-bench", emit=lambda line: None)


async def bench(store: Path, duration: float, concurrencies: list[int]) -> list[dict]:
    import aiohttp

    results = []
    for name, (_, row, _) in MODELS.items():
        proc, url = start_server(store, name, "auto", [])
        try:
            await wait_ready(url, proc)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/v1/models/{name}/metadata") as r,
            ):
                engine = (await r.json())["kerasop"]["engine"]
            body = json.dumps({"instances": [row]}).encode()
            for c in concurrencies:
                stats = await load(url, f"/v1/models/{name}:predict", body, c, duration)
                results.append({"model": name, "engine": engine, "concurrency": c, **stats})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="kerasop-bench-") as tmp:
        data, store = Path(tmp) / "data", Path(tmp) / "store"
        train(data, store)
        results = asyncio.run(bench(store, min(args.duration, 60.0), concurrencies))
    print("| model | engine | concurrency | requests | errors | req/s | p50 ms | p90 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['model']} | {r['engine']} | {r['concurrency']} | {r['requests']} |"
            f" {r['errors']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
