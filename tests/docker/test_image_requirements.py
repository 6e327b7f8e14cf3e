"""Unit tests: what each image variant installs (images/requirements.py; no Docker needed).

The host's wheelhouse download and the install inside the build both read this list, so
these are the image contents, down to which CUDA the gpu variant carries.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("requirements", ROOT / "images/requirements.py")
assert _spec and _spec.loader
requirements = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(requirements)


def _names(reqs: list[str]) -> set[str]:
    return {r.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip() for r in reqs}


def test_the_cpu_variant_is_the_pyproject_as_written() -> None:
    reqs = requirements.requirements(str(ROOT / "pyproject.toml"), ["runtime"], "cpu")
    names = _names(reqs)
    assert {"tensorflow-cpu", "jax", "onnxruntime", "keras"} <= names
    assert not any("cuda" in r or "-gpu" in r for r in reqs), reqs


def test_the_gpu_variant_swaps_every_cpu_build_for_its_cuda_12_build() -> None:
    runtime = requirements.requirements(str(ROOT / "pyproject.toml"), ["runtime"], "gpu")
    names = _names(runtime)
    assert {"tensorflow[and-cuda]", "jax[cuda12]", "onnxruntime-gpu[cuda,cudnn]"} <= names
    assert not {"tensorflow-cpu", "jax", "onnxruntime"} & names, runtime
    # onnxruntime-gpu 1.27 moved to CUDA 13: the image keeps the CUDA 12 that TF and JAX use
    assert "onnxruntime-gpu[cuda,cudnn]>=1.17,<1.27" in runtime
    serving = requirements.requirements(str(ROOT / "pyproject.toml"), ["serving"], "gpu")
    assert "onnxruntime-gpu[cuda,cudnn]>=1.17,<1.27" in serving
    assert not any(r.startswith(("tensorflow", "jax", "keras")) for r in serving), serving


def test_gpu_build_keeps_ranges_and_markers_and_leaves_the_rest() -> None:
    gpu = requirements.gpu_build
    assert gpu("jax>=0.4.30") == "jax[cuda12]>=0.4.30"
    assert gpu('jax>=0.4; python_version >= "3.11"') == 'jax[cuda12]>=0.4; python_version >= "3.11"'
    assert gpu("onnxruntime") == "onnxruntime-gpu[cuda,cudnn]<1.27"
    assert gpu("numpy>=1.26") == "numpy>=1.26"
    assert gpu("jaxlib>=0.4") == "jaxlib>=0.4"  # a name that only starts like one stays
