"""The GPT-2 family's shapes as random models: gpt2-medium, gpt2-large and gpt2-xl.

The speed of a forward pass depends on the shapes only, so a random model with gpt2-xl's
shapes runs exactly as fast as gpt2-xl. They are built once from fixed seeds with
gpt2np.tools.random_model.random_tensors into a folder outside git (weights/ is ignored;
$GPT2NP_BENCH_MODELS to put them elsewhere) and reused.

Writing: safetensors' own save_file serializes the whole file in memory before writing it,
which for gpt2-xl (6.2 GB) would hold the model twice in RAM. We write the same format one
tensor at a time instead: an 8-byte header length, the JSON header, the raw bytes.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

from .tasks import ROOT

FAMILY = {  # name: (n_layer, n_embd, n_head), the shapes published for each size
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}
SEED = 7


def family_root() -> Path:
    return Path(os.environ.get("GPT2NP_BENCH_MODELS", ROOT / "weights" / "bench-models"))


def write_safetensors(path: Path, tensors: dict) -> None:
    """tensors (name -> float32 array) -> a safetensors file, streamed tensor by tensor."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to a multiple of 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for t in tensors.values():
            f.write(memoryview(t.reshape(-1)).cast("B"))


def build_family_model(name: str, root: Path | None = None) -> Path:
    """Build FAMILY[name] under root/<name>/ unless it is there; return the folder."""
    from gpt2np.config import GPT2Config
    from gpt2np.tools.random_model import random_tensors

    root = root or family_root()
    folder = root / name
    if (folder / "model.safetensors").is_file():
        return folder
    n_layer, n_embd, n_head = FAMILY[name]
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    tmp = root / f".{name}.{os.getpid()}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    tensors = random_tensors(config, seed=SEED)
    write_safetensors(tmp / "model.safetensors", {"transformer." + k: v for k, v in tensors.items()})
    del tensors
    (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tmp.rename(folder)  # atomic: a half-written model is never mistaken for a whole one
    return folder


if __name__ == "__main__":  # python -m scripts.bench.family: build them all now
    for n in FAMILY:
        print(build_family_model(n))


# The model every task runs: the real GPT-2 124M if on this machine, else the random 124M-shaped one.
def resolve_model(arg: str | None) -> tuple[Path, str]:
    from gpt2np.errors import GPT2npError
    from gpt2np.hub import resolve_model_files
    from gpt2np.tools.random_model import build_test_model

    if arg:
        return resolve_model_files(arg, local_files_only=True)["model.safetensors"].parent, arg
    try:
        return resolve_model_files("gpt2", local_files_only=True)["model.safetensors"].parent, "real GPT-2 124M (gpt2)"
    except GPT2npError:
        root = Path(os.environ.get("GPT2NP_TEST_MODELS", ROOT / "weights" / "test-models"))
        print(
            f"real GPT-2 weights not found; using the random 124M-shaped model in {root / 'gpt2-shaped'}",
            file=sys.stderr,
        )
        return build_test_model("gpt2-shaped", root), "random 124M-shaped (real GPT-2 weights not on this machine)"
