"""The safetensors file: its tensors mapped into memory, not copied.

A safetensors file is simple enough to read by hand, and reading it by hand is what lets us
avoid copying 500 MB of weights:

    [8 bytes: header length N, little-endian u64][N bytes: JSON header][raw tensor bytes]

The JSON header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]},
offsets counted from the first byte after the header. We `mmap` the file and hand out NumPy
views of it: the operating system pages the weights in on first use, shares them between
processes, and keeps them in its file cache (the `safetensors` package's NumPy loader copies
every tensor into fresh memory instead). We use `safetensors` itself to *write* files.

Pickle files (`pytorch_model.bin`) are never read: unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from .errors import CheckpointError

# safetensors dtype code -> NumPy dtype (little-endian, as the format requires).
# BF16 has no NumPy dtype: we read it as uint16 and widen it to float32 ourselves.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


def read_header(path: Path) -> tuple[dict, int, int]:
    """Return (tensor entries, where the data starts, the file's size), checking every entry."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short to be a safetensors file; download it again")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(
                f"{path} is truncated or has a corrupted safetensors header (it claims {n} header bytes in a "
                f"{size}-byte file); download the file again"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path} has a corrupted safetensors header (not valid JSON); download the file again"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted safetensors header (not a JSON object); download the file again")
    header.pop("__metadata__", None)
    data_start = 8 + n
    data_end = 0
    for name, entry in header.items():
        if isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and entry["dtype"] not in DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {entry['dtype']!r}, which gpt2np cannot read (it reads "
                f"{', '.join(DTYPES)}); convert the checkpoint to float32 or float16"
            )
        try:
            dtype = DTYPES[entry["dtype"]]
            shape, (begin, end) = list(entry["shape"]), entry["data_offsets"]
            if not all(type(v) is int for v in [*shape, begin, end]):  # JSON integers only: no 8.5, "8" or true
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: the header entry of tensor {name!r} is malformed ({entry!r}); download the file again"
            ) from None
        # math.prod: Python's integers do not overflow (np.prod in int64 wraps a shape such as
        # [2**62, 2**62] to 0 elements, which would then "agree" with an empty byte range). And
        # NumPy refuses a shape over 2**63 bytes even when another dimension is 0 ([0, 2**62]).
        if (
            any(d < 0 for d in shape)
            or end - begin != math.prod(shape) * dtype.itemsize
            or math.prod(d for d in shape if d > 0) * dtype.itemsize >= 2**63
            or begin < 0
        ):
            raise CheckpointError(
                f"{path}: tensor {name!r} claims shape {shape} of {entry['dtype']} in bytes [{begin}, {end}), "
                "which do not agree; the file is corrupted, download it again"
            )
        data_end = max(data_end, end)
        header[name] = {"dtype": entry["dtype"], "shape": shape, "data_offsets": [begin, end]}  # checked values only
    # Each tensor its own bytes: a header whose ranges overlap makes two tensors one (ln_2.weight
    # reading ln_1.weight's bytes loads and runs, with wrong logits); the safetensors package refuses it.
    ranges = sorted((*e["data_offsets"], n) for n, e in header.items() if e["data_offsets"][1] > e["data_offsets"][0])
    for (_, end_a, a), (begin_b, _, b) in itertools.pairwise(ranges):  # by where they begin
        if begin_b < end_a:
            raise CheckpointError(
                f"{path}: tensors {a!r} and {b!r} claim overlapping bytes (one ends at {end_a}, the other begins at "
                f"{begin_b}), so each would read the other's values; the file is corrupted, download it again"
            )
    if data_start + data_end > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {data_start + data_end} bytes but the file has {size}; "
            "the download was probably interrupted, download it again"
        )
    return header, data_start, size


def map_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as read-only NumPy views of one memory map."""
    path = Path(path)
    header, data_start, size = read_header(path)
    with open(path, "rb") as f:
        # The map stays alive as long as any array refers to it; closing the file is fine.
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    tensors = {}
    for name, entry in header.items():
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        offset = data_start + begin
        array = np.frombuffer(buffer, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=offset)
        if offset % dtype.itemsize:
            # A misaligned start makes NumPy skip BLAS (and slows every matmul); files written
            # by safetensors >= 0.3 pad the header so this never happens. Copy it once instead.
            array = array.copy()
        tensors[name] = array.reshape(shape)
        if entry["dtype"] == "BF16":
            # bfloat16 is the top half of a float32: shift it back into place (this copies).
            tensors[name] = (tensors[name].astype(np.uint32) << 16).view(np.float32)
    return tensors


# --- remembered checks --------------------------------------------------------------------
# Some checks read every byte of a file (its sha256 in hub.py, "every weight is finite" in
# weights.py): ~0.2 s or more for GPT-2 124M, on a load that otherwise takes milliseconds.
# Their success is remembered in a small stamp file, so each version of a file is checked once.
# The stamp holds what changes when the file does, cheaply (no full read):
# - size and mtime: any ordinary write changes them;
# - ctime: `cp -p`, `rsync -t`, tar and `touch -r` put an old mtime back after writing, but
#   cannot set ctime, which the kernel sets to "now" on every change of the file;
# - the inode number: a file replaced by another one (a rename over it) has another inode;
# - a sample of the content (see content_sample): its header and 64 blocks spread through it,
#   for a filesystem that keeps no ctime (some network and FUSE filesystems).
# What it cannot see: a change written to the disk behind the filesystem's back (a raw block
# device, a backup restored with the clock turned back) that falls outside the sampled blocks.
# Then `verify=False` aside, delete ~/.cache/gpt2np (or $GPT2NP_CACHE) to check everything again.

SAMPLE_HEAD = 1 << 20  # the first MiB: a safetensors header (gpt2's is 15 kB, gpt2-xl's 60 kB) and the first weights
SAMPLE_BLOCKS = 64  # then this many blocks ...
SAMPLE_BLOCK = 4096  # ... of this many bytes, spread evenly over the rest of the file


def sample_offsets(size: int) -> list[int]:
    """Where content_sample's blocks start in a file of `size` bytes: after the first MiB, evenly
    spaced, the last one ending at the end of the file. (None for a file of up to 1 MiB.)"""
    if size <= SAMPLE_HEAD:
        return []
    last = max(SAMPLE_HEAD, size - SAMPLE_BLOCK)  # where the last block starts
    return [SAMPLE_HEAD + (last - SAMPLE_HEAD) * k // (SAMPLE_BLOCKS - 1) for k in range(SAMPLE_BLOCKS)]


def content_sample(path: str | Path) -> str:
    """A fingerprint of a file that reads 1.25 MiB of it whatever its size: the sha256 of its
    size, its first MiB and 64 blocks of 4 KiB spread evenly over the rest (a file of up to
    1 MiB is read whole). Another checkpoint, or another version of one, differs in it; an edit
    of a few bytes between the sampled blocks does not change it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256(str(size).encode())
        h.update(f.read(SAMPLE_HEAD))
        for offset in sample_offsets(size):
            f.seek(offset)
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def cache_dir() -> Path:
    """gpt2np's own cache: $GPT2NP_CACHE, else $XDG_CACHE_HOME/gpt2np or ~/.cache/gpt2np."""
    return Path(
        os.environ.get("GPT2NP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2np"
    )


def stamp_path(path: Path, kind: str) -> Path:
    """Where the stamp of check `kind` ("verified", "finite") for `path` lives."""
    return cache_dir() / kind / hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]


def stamp_key(path: Path, fact: str) -> str:
    """What a stamp holds: the file's state (see above) and the fact checked."""
    stat = os.stat(path)
    return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino} {content_sample(path)} {fact}"


def is_remembered(path: Path, kind: str, fact: str) -> bool:
    stamp = stamp_path(path, kind)
    try:
        return stamp.read_text() == stamp_key(path, fact)
    except OSError:
        return False


def remember(path: Path, kind: str, fact: str) -> None:
    stamp = stamp_path(path, kind)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(stamp_key(path, fact))
    except OSError:
        pass  # cannot remember it: the check just runs again next time


def sha256_of(path: str | Path, chunk: int = 1 << 24) -> str:
    """The sha256 of a whole file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def remembered_sha256(path: str | Path) -> str:
    """The sha256 of the whole file, computed once per version of it and remembered in a stamp
    (see above: any ordinary write changes the file's size, mtime or ctime, a replaced file its
    inode, and the stamp then no longer applies). What it cannot see is what the stamps cannot:
    bytes changed behind the filesystem's back, outside content_sample's blocks."""
    path = Path(path)
    stamp, state = stamp_path(path, "sha256"), stamp_key(path, "")  # state: "size mtime ctime inode sample "
    try:
        text = stamp.read_text()
    except OSError:
        text = ""
    digest = text[len(state) :]
    if text.startswith(state) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    digest = sha256_of(path)
    remember(path, "sha256", digest)
    return digest


def save_checkpoint(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors with the `safetensors` package (the reference writer).

    The metadata says format "pt" because transformers refuses safetensors files without it,
    and the files we write are meant to be loaded by transformers too (the cross-checks)."""
    from safetensors.numpy import save_file

    metadata = {"format": "pt", **(metadata or {})}
    # np.asarray(order="C"), not np.ascontiguousarray: that one turns a 0-d scalar into shape [1].
    save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, str(path), metadata=metadata)
