"""Where a measured figure came from: machine, package versions, git commit. Stored next to every result."""

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("tensorflow", "tf-keras", "larq", "larq-compute-engine", "tensorflow-model-optimization", "numpy",
            "scikit-learn")


_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine():
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), **cpu()}


def cpu():
    """The CPU model and the vector-instruction flags that decide TensorFlow's kernels (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return {"cpu_model": None, "cpu_flags": None}
    first = lambda key: next((l.split(":", 1)[1].strip() for l in lines if l.startswith(key)), "")  # noqa: E731
    flags = set(first("flags").split())
    return {"cpu_model": first("model name") or None, "cpu_flags": [f for f in _FLAGS if f in flags]}


def versions():
    out = {}
    for package in PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def commit():
    """The git commit of the working tree (with "-dirty" when it has uncommitted changes), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return (head + ("-dirty" if dirty else "")) or None


def provenance():
    return {"machine": machine(), "versions": versions(), "commit": commit()}
