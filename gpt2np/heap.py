"""Where NumPy's short-lived arrays get their memory, and what we ask glibc's malloc to do with it.

A forward pass makes hundreds of arrays that live for a moment: a linear layer's output, a
LayerNorm's float64 copy, a block of attention scores. NumPy takes each from malloc and gives it
back a line later. With its default settings glibc's malloc hands the top of its heap back to
the operating system whenever a few MB lie free there, and serves some large arrays with a
fresh mmap of their own; either way the next large array gets memory the kernel must zero-fill
again, one page fault per 4 KB page. For GPT-2 that happens several times per block: a 1x128
prefill of the 124M model made about 12,800 minor page faults (50 MB of pages zeroed) per forward.

So when a model is built, we set two of glibc's malloc parameters (mallopt; Linux with glibc
only, nothing happens elsewhere), once per process:

    M_MMAP_THRESHOLD = 32 MiB   arrays up to 32 MiB come from the heap, not from an mmap each
    M_TRIM_THRESHOLD = 64 MiB   the heap's top goes back to the system only past 64 MiB free

These are where glibc's own thresholds end up anyway once a process has freed a large array
(they move up by themselves, to at most these values); a process that has only run short
prompts never gets there. Setting them from the start, measured with
`python scripts/experiments/where_time_goes.py page-faults 1 128` (6 fresh processes each way, 2026-12-03):
page faults per 1x128 prefill 12,800 -> 0, its time 166 -> 143 ms (Haswell kernel) and 127 ->
100 ms (SkylakeX); 1x1000: 4,600 -> 0 faults, 1253 -> 1218 ms. How many faults the defaults
make depends on the sizes a process has met: at 1x150 only 1,260, and the time did not move
(126 ms both, SkylakeX). Decode steps made no faults either way and did not change. What it
costs: peak RSS the same at 1x128 and 26 MB higher after a 1x1000 prompt (663 -> 689 MB), as the
process may keep up to 64 MiB of freed memory; and the setting is the whole process's, not
gpt2np's alone (there is one malloc for everybody in it).
GPT2NP_TUNE_MALLOC=0 in the environment leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os

from .errors import InputError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # the parameters' numbers in glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}  # bytes
ENV = "GPT2NP_TUNE_MALLOC"

_tuned: bool | None = None  # whether this process's malloc was tuned (None: not asked yet)


def wanted() -> bool:
    """GPT2NP_TUNE_MALLOC: "1" or unset (tune), "0" (leave malloc alone)."""
    raw = os.environ.get(ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise InputError(f"{ENV}={raw!r}: expected 1 (tune glibc's malloc, the default) or 0 (leave it alone)")
    return raw != "0"


def is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):  # no such confstr name here: not glibc
        return False


def tune_malloc() -> bool:
    """Set SETTINGS with glibc's mallopt, once per process (see the module's docstring).
    -> whether this process's malloc is tuned."""
    global _tuned
    if _tuned is None:
        tune = wanted()  # a bad value raises here, at every model built, until it is fixed
        _tuned = False
        if tune and is_glibc():
            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
            if mallopt is not None:
                results = [mallopt(param, value) for param, value in SETTINGS.items()]  # every one, even if one fails
                _tuned = all(r == 1 for r in results)  # mallopt returns 1 on success
    return _tuned


def available_memory() -> int:
    """Bytes of memory this process may still fill: Linux's MemAvailable, else all of it. What
    a request that cannot fit (random-model's absurd shapes, generate(num_beams=2**40)) is
    measured against, so that it is refused naming its size instead of ending in MemoryError."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size(nbytes: int | float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `ls -lh --si` and download pages say)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1000
    raise AssertionError  # unreachable
