"""Print the third-party requirements of the project for a set of extras.

Used twice with the same meaning: on the host, to download a wheelhouse
(``scripts/images.sh``), and inside the image build (``images/install.sh``),
so the two can never disagree about what an image contains.

    python3 images/requirements.py pyproject.toml --extras runtime --variant gpu

``--variant gpu`` swaps ``tensorflow-cpu`` for ``tensorflow[and-cuda]``
(same version range), which pulls the CUDA/cuDNN wheels from PyPI.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


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
        reqs = [
            re.sub(r"^tensorflow-cpu(?=[\s<>=!~;\[]|$)", "tensorflow[and-cuda]", r) for r in reqs
        ]
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
