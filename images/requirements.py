"""Print the third-party requirements of the project for a set of extras.

Used twice with the same meaning: on the host, to download a wheelhouse
(``scripts/images.sh``), and inside the image build (``images/install.sh``),
so the two can never disagree about what an image contains.

    python3 images/requirements.py pyproject.toml --extras runtime --variant gpu

``--variant gpu`` swaps each CPU-only distribution for its CUDA build (same
version range; the CUDA 12 and cuDNN wheels come from PyPI with them):
``tensorflow-cpu`` -> ``tensorflow[and-cuda]``, ``jax`` -> ``jax[cuda12]``,
``onnxruntime`` -> ``onnxruntime-gpu[cuda,cudnn]`` below 1.27 (it keeps the CPU
provider too).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

# CPU-only distribution -> (its CUDA build, an extra version bound). One CUDA per image:
# TensorFlow's and JAX's wheels bring CUDA 12, and onnxruntime-gpu moved to CUDA 13 in 1.27.
GPU_BUILDS = {
    "tensorflow-cpu": ("tensorflow[and-cuda]", ""),
    "jax": ("jax[cuda12]", ""),
    "onnxruntime": ("onnxruntime-gpu[cuda,cudnn]", "<1.27"),
}
_NAME = re.compile(r"^([A-Za-z0-9_.-]+)(?=[\s<>=!~;\[]|$)")


def gpu_build(requirement: str) -> str:
    """``onnxruntime>=1.17`` -> ``onnxruntime-gpu[cuda,cudnn]>=1.17,<1.27``; others stay."""
    match = _NAME.match(requirement)
    if not match or match.group(1) not in GPU_BUILDS:
        return requirement
    name, bound = GPU_BUILDS[match.group(1)]
    spec, _, marker = requirement[match.end() :].partition(";")
    spec = ",".join(s for s in (spec.strip(), bound) if s)
    return name + spec + (f"; {marker.strip()}" if marker else "")


def requirements(pyproject: str, extras: list[str], variant: str) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            sys.exit(
                f"requirements.py: no extra {extra!r} in {pyproject} (have {sorted(optional)})"
            )
        reqs += optional[extra]
    if variant == "gpu":
        reqs = [gpu_build(r) for r in reqs]
    return list(dict.fromkeys(reqs))  # de-duplicated, order kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--extras", default="", help="comma-separated extras")
    parser.add_argument("--variant", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(args.pyproject, extras, args.variant)))


if __name__ == "__main__":
    main()
