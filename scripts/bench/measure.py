"""Small measuring tools shared by the workers: clocks, memory, the BLAS in use."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


def median(xs):
    return statistics.median(xs) if xs else None


def timed(fn, warmup: int, iters: int) -> list[float]:
    """Call fn warmup times untimed, then iters times timed; the list of seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def mapped_pages(path) -> dict[str, int] | None:
    """How this process maps a file: bytes resident, and bytes of those mapped with 2 MB pages
    (/proc/self/smaps; None where the file is not mapped, or not on Linux). Which page size the
    kernel uses depends on how the file came into the page cache, and 4 KB pages cost a decode
    step a few percent at batch 8 (scripts/experiments/where_time_goes.py weights-in-memory)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    target, inside, mapped = str(Path(path).resolve()), False, False
    found = {"resident": 0, "pmd": 0}
    for line in lines:
        if not line[:1].isupper():  # a mapping's first line: "start-end perms offset dev inode path"
            inside = line.rstrip().endswith(target)
            mapped = mapped or inside
        elif inside and line.startswith(("Rss:", "FilePmdMapped:")):
            found["resident" if line.startswith("Rss:") else "pmd"] += int(line.split()[1]) * 1024
    return found if mapped else None


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon, RssFile of this process, in bytes."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak if sys.platform == "darwin" else peak * 1024
    return out


def blas_info() -> list[dict]:
    """What threadpoolctl sees: which BLAS, which kernel ("architecture"), how many threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keep = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "architecture",
        "threading_layer",
        "num_threads",
        "filepath",
    )
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def limit_blas_threads(n: int):
    """OPENBLAS_NUM_THREADS is already in the worker's environment (set by the parent before
    NumPy loaded OpenBLAS); threadpoolctl makes sure. Keep the returned object alive."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)
