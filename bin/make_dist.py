#!/usr/bin/env python
"""Build what a cluster needs from this checkout (`make dist`), into dist/:

    gie-<version>-py3-none-any.whl   the wheel (pyproject.toml), for driver hosts, trainers, images
    gie-<version>-pyfiles.zip        the wheel's modules without its metadata: spark-submit
                                     --py-files puts only .zip/.egg/.py files on the Python path
    build_graph.py                   spark_jobs/build_graph.py: spark-submit needs a .py file

The zip is cut from the wheel, not from the source tree, so that both hold exactly the same
modules; a module of gie/ or graphbuild/ that the wheel lacks fails the build here.
pip builds the wheel in an isolated environment (setuptools and wheel from the package
index), so the development venv needs nothing more.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gie", "graphbuild")


def build_wheel(out: Path) -> Path:
    # setuptools reuses build/lib between runs: a module deleted since would reappear
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(ROOT)], check=True)
    for leftover in ("build", "gie.egg-info"):
        shutil.rmtree(ROOT / leftover, ignore_errors=True)
    wheels = sorted(out.glob("gie-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one gie wheel in {out}, found {wheels}")
    return wheels[0]


def source_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "__pycache__" not in p.parts} | {"cli.py"}


def pyfiles_zip(wheel: Path) -> Path:
    """The wheel's importable files (everything but *.dist-info/), for --py-files."""
    out = wheel.with_name(wheel.name.split("-py3")[0] + "-pyfiles.zip")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        names = [n for n in src.namelist() if ".dist-info/" not in n]
        missing = source_modules() - set(names)
        if missing:
            raise SystemExit(f"{wheel.name} lacks modules of the source tree: {sorted(missing)} "
                             "(check [tool.setuptools] in pyproject.toml)")
        for n in sorted(names):
            dst.writestr(src.getinfo(n), src.read(n))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (replaced)")
    out = ap.parse_args().out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wheel = build_wheel(out)
    zipped = pyfiles_zip(wheel)
    entry = shutil.copy2(ROOT / "spark_jobs" / "build_graph.py", out / "build_graph.py")
    for p in (wheel, zipped, Path(entry)):
        print(f"{p}  ({p.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
