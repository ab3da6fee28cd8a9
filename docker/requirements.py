"""Print the project's requirements from pyproject.toml, one per line.

    python3 docker/requirements.py pyproject.toml                 # the serving dependencies
    python3 docker/requirements.py pyproject.toml --only loadtest # just the `loadtest` extra
    python3 docker/requirements.py pyproject.toml --build loadtest # serving + extra + build system

docker/Dockerfile installs dependencies from this list in their own layers, before the source is
copied, so that a source change does not reinstall them; docker/smoke.sh fills its wheelhouse
from the same list. Standard library only: it runs on the bare base image.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


def read_requirements(pyproject: Path, extras: list[str], only_extras: bool, build_system: bool) -> list[str]:
    """The serving dependencies (unless `only_extras`), those of each extra in `extras`, and the
    build-system requirements if `build_system`. Raises SystemExit naming an unknown extra."""
    data = tomllib.loads(pyproject.read_text())
    optional = data["project"].get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; known: {', '.join(optional)}")
    requirements = [] if only_extras else list(data["project"]["dependencies"])
    for extra in extras:
        requirements += optional[extra]
    if build_system:
        requirements += data["build-system"]["requires"]
    return requirements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extras", nargs="*", help="optional-dependency groups to add")
    parser.add_argument("--only", action="store_true", help="the extras' requirements alone")
    parser.add_argument("--build", action="store_true", help="add the build-system requirements")
    args = parser.parse_args(argv)
    print("\n".join(read_requirements(args.pyproject, args.extras, args.only, args.build)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
