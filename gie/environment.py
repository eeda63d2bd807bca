"""What a run ran on, recorded in every output's metadata under `environment`.

The same code, inputs, config and seed give the same bytes only on the same kind of host with
the same libraries: numpy, torch and Faiss pick their vector kernels by CPU and by build, and
another choice rounds the last bits otherwise (docs/OPERATIONS.md, "Comparing two runs").
When two runs differ, `cli.py compare` shows where their environments differ, so an upgrade
or a new host is told apart from a change in the data or the code.
"""
from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Any

# Distributions whose version can change an output's bits (or, for the engines, its
# behaviour); looked up without importing them. Faiss ships as one of several wheels.
PACKAGES = ("numpy", "pandas", "pyarrow", "pyspark", "torch", "dgl", "faiss-cpu",
            "faiss-gpu-cu12", "scikit-learn", "lightgbm", "lleaves", "llvmlite")


def describe() -> dict[str, Any]:
    """Python, package versions and the CPU's vector instructions of this process."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: v for name in PACKAGES if (v := _version(name)) is not None},
        "cpu": _cpu(),
        "kernels": _kernels(),
    }


def one_line(env: dict[str, Any]) -> str:
    """A `describe()` record for a log line: "Python 3.11.7, numpy 1.26.4, ...; CPU AMD EPYC
    (up to AVX2)"."""
    cpu = env["cpu"]
    simd = cpu["vector_extensions"][-1] if cpu["vector_extensions"] else "no vector extensions"
    return (f"Python {env['python']}, "
            + ", ".join(f"{name} {v}" for name, v in env["packages"].items())
            + f"; CPU {cpu['model'] or cpu['machine']} (up to {simd})")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> dict[str, Any]:
    """The CPU model and the vector extensions numpy found: the ones numpy and Faiss
    dispatch on (SSE4 .. AVX512), not the baseline every x86-64 build assumes."""
    try:                                    # numpy 2 renamed numpy.core (we pin numpy<2)
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return {"machine": platform.machine(), "model": _cpu_model(),
            "vector_extensions": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _kernels() -> dict[str, str]:
    """The kernels torch and Faiss chose, for those this process loaded (importing them
    only to ask would cost a Spark driver seconds and memory)."""
    out = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "get_compile_options"):
        out["faiss_compile_options"] = faiss.get_compile_options().strip()
    return out


def differences(a: dict[str, Any], b: dict[str, Any], where: str = "") -> list[str]:
    """Where two `describe()` records differ, one line each ("packages.numpy: 1.26.4 in A,
    1.26.3 in B"); an entry missing on one side counts as a difference."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y, at = a.get(key), b.get(key), f"{where}{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{at}.")
        elif x != y:
            out.append(f"{at}: {x} in A, {y} in B")
    return out
