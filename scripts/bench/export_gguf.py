"""Convert a GPT-2 to an f32 GGUF for the benchmark's llama.cpp column, once per model.

    python scripts/bench/export_gguf.py                  # the bench's model: real gpt2 if present, else the random 124M-shaped one
    python scripts/bench/export_gguf.py --model FOLDER   # any model folder (config.json + model.safetensors)
    python scripts/bench/export_gguf.py --force          # convert again even if the cached one is there

(from the repository root; needs llama-cpp-python, which compiles llama.cpp when pip installs it,
and torch: `pip install llama-cpp-python` after `pip install -e '.[bench]'`). The steps:

1. llama.cpp's own converter, convert_hf_to_gguf.py: it is not in llama-cpp-python's wheel, so
   it is taken from the sdist of the installed version (`pip download --no-binary :all:
   llama-cpp-python==VERSION`, once) with the two folders it imports (conversion/, gguf-py/);
2. the model folder as the converter expects a hub GPT-2: config.json with "architectures"
   and "n_ctx" (= n_positions; hub GPT-2 configs carry both, ours leave them out), the same
   model.safetensors (a link, not a copy), GPT-2's vocab.json and merges.txt (the folder's, or
   the ones gpt2np ships);
3. `convert_hf_to_gguf.py --outtype f32`: every tensor in float32;
4. the logits checked against gpt2np's (check_logits): each row of a left-padded batch run as its
   own sequence (its real tokens only, from position 0), prefilled, then single-token steps,
   every real position compared with gpt2np's forward over the whole batch. Not to 1e-4 as ONNX
   Runtime: llama.cpp's CPU GELU goes through a float16 table (ggml-cpu/vec.h,
   `#define GGML_GELU_FP16`: the input rounded to float16, the output read from a float16
   table), which moves logits by ~1e-4 to 1e-3 on its own. So the check requires
   LLAMA_TOLERANCE (1e-2; a wrong tensor, position or cache entry moves logits by O(1)), and
   says how close llama.cpp comes to gpt2np with ggml's GELU rounding copied into it by hooks
   (mlp.hook_pre rounded to float16, mlp.hook_post rounded to float16, |x| >= 10 as ggml):
   what remains after the known difference is taken out.

Cached under $GPT2NP_BENCH_MODELS/gguf (default weights/bench-models/gguf), keyed by the
weights like the ONNX export (scripts/bench/export_onnx.py), with export.json beside model.gguf.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench.export_onnx import (  # noqa: E402
    TOLERANCE,
    ExportUnavailable,
    LogitsMismatch,
    check_batch,
    cli_main,
    ensure_export,
    max_difference,
    require_equal,
)
from scripts.bench.family import family_root  # noqa: E402
from scripts.bench.impl_llamacpp import LlamaGGUF  # noqa: E402

LLAMA_TOLERANCE = 1e-2  # max |logits difference| allowed for llama.cpp (its float16 GELU: see above)
MODEL_FILE = "model.gguf"
CONVERTER = "convert_hf_to_gguf.py"
NEEDED = {"llama_cpp": "llama-cpp-python", "torch": "torch", "safetensors": "safetensors"}


def gguf_root() -> Path:
    return family_root() / "gguf"


def missing_for_conversion() -> list[str]:
    return [package for module, package in NEEDED.items() if find_spec(module) is None]


# --- llama.cpp's converter -------------------------------------------------------------------


def converter_dir() -> Path:
    """llama.cpp's convert_hf_to_gguf.py (with conversion/ and gguf-py/) from the sdist of the
    installed llama-cpp-python, fetched with pip once and kept beside the conversions."""
    version = metadata.version("llama-cpp-python")
    folder = gguf_root() / f"llama.cpp-converter-{version}"
    if (folder / CONVERTER).is_file():
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
            + [f"llama-cpp-python=={version}", "-d", tmp],
            check=True,
        )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tmp) / "converter"
        with tarfile.open(sdist) as tar:
            prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
            for member in tar.getmembers():
                rel = member.name.removeprefix(prefix)
                wanted = rel == CONVERTER or rel.startswith(("conversion/", "gguf-py/"))
                if member.name.startswith(prefix) and wanted and member.isfile():
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        if not (staging / CONVERTER).is_file():
            raise ExportUnavailable(f"{sdist.name} has no vendor/llama.cpp/{CONVERTER}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), folder)
    return folder


def stage(folder: Path, out: Path) -> Path:
    """folder as the converter expects a hub GPT-2, in out/ (the weights linked, not copied)."""
    import gpt2np

    out.mkdir(parents=True)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("architectures", ["GPT2LMHeadModel"])
    config.setdefault("n_ctx", config["n_positions"])
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "model.safetensors").symlink_to(folder / "model.safetensors")
    shipped = Path(gpt2np.__file__).parent / "tokenizer_files"
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name if (folder / name).is_file() else shipped / name, out / name)
    return out


def convert(folder: Path, out_dir: Path) -> dict:
    """folder -> out_dir/model.gguf (f32) with llama.cpp's converter; what happened."""
    tools = converter_dir()
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(folder, Path(tmp) / folder.name)
        done = subprocess.run(
            [sys.executable, CONVERTER, str(staged), "--outtype", "f32", "--outfile", str(out_dir / MODEL_FILE)],
            cwd=tools,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{CONVERTER} failed (exit {done.returncode}):\n{tail}")
    return {
        "converter": f"llama.cpp's {CONVERTER} --outtype f32, from llama-cpp-python {metadata.version('llama-cpp-python')}'s sdist",
        "gguf_bytes": (out_dir / MODEL_FILE).stat().st_size,
    }


# --- the logits check ------------------------------------------------------------------------


def llama_logits(graph: LlamaGGUF, ids: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """[B, T, V] logits from llama.cpp at the real positions of a left-padded batch (the pads'
    stay 0): each row its own sequence, its real prompt tokens in one call, then `steps` calls
    of one token per row."""
    B, T = ids.shape
    prompt = T - steps
    out = np.zeros((B, T, graph.vocab_size), np.float32)
    graph.clear()
    rows = [np.flatnonzero(mask[b, :prompt]) for b in range(B)]  # the real prompt positions of each row
    tokens = np.concatenate([ids[b, r] for b, r in enumerate(rows)])
    positions = np.concatenate([np.arange(len(r)) for r in rows])
    seqs = np.concatenate([np.full(len(r), b) for b, r in enumerate(rows)])
    logits = graph.decode(tokens, positions, seqs, np.ones(len(tokens), dtype=bool))
    start = 0
    for b, r in enumerate(rows):
        out[b, r] = logits[start : start + len(r)]
        start += len(r)
    for t in range(prompt, T):
        positions = mask[:, : t + 1].sum(axis=1) - 1  # each row's own position of its next token
        out[:, t] = graph.decode(ids[:, t], positions, np.arange(B), np.ones(B, dtype=bool))
    return out


def ggml_gelu_hooks():
    """Hooks that make gpt2np's GELU round as ggml's CPU GELU does (its float16 table): the
    input rounded to float16, the output rounded to float16; x >= 10 gives x, x <= -10 gives 0."""
    inputs = {}

    def before(x, name):
        inputs[name.rsplit(".", 1)[0]] = x.copy()
        return x.astype(np.float16).astype(np.float32)

    def after(y, name):
        x = inputs.pop(name.rsplit(".", 1)[0])
        table = y.astype(np.float16).astype(np.float32)
        return np.where(x >= 10, x, np.where(x <= -10, 0, table)).astype(np.float32)

    return [(lambda n: n.endswith("mlp.hook_pre"), before), (lambda n: n.endswith("mlp.hook_post"), after)]


def check_logits(folder: Path, gguf_path: Path, threads: int = 2) -> dict:
    """gpt2np's logits against llama.cpp's at every real position of the check batch; raises
    LogitsMismatch above LLAMA_TOLERANCE. Also says how far llama.cpp is from gpt2np with
    ggml's float16 GELU copied in (no limit on that: it is the explanation, not the test)."""
    from gpt2np import GPT2

    model = GPT2.from_pretrained(folder)
    ids, mask, steps = check_batch(model.config.vocab_size)
    graph = LlamaGGUF(gguf_path, threads, n_seq=ids.shape[0])
    try:
        if graph.vocab_size != model.config.vocab_size:
            raise LogitsMismatch(
                f"the GGUF has {graph.vocab_size} logits per position, the model {model.config.vocab_size}"
            )
        theirs = llama_logits(graph, ids, mask, steps)
    finally:
        graph.close()  # the bench's parent process runs this check: it keeps nothing of llama.cpp's
    real = mask.astype(bool)
    ours = model(ids, attention_mask=mask).logits
    emulated = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=ggml_gelu_hooks())
    diff = max_difference(ours[real], theirs[real])
    require_equal(diff, LLAMA_TOLERANCE, folder.name, "llama.cpp", "export_gguf")
    return {
        "tolerance": LLAMA_TOLERANCE,
        "max_abs_diff": diff,
        "max_abs_diff_ggml_gelu": max_difference(emulated[real], theirs[real]),
        "onnx_tolerance_for_comparison": TOLERANCE,
        "batch": f"{ids.shape[0]} rows of {ids.shape[1] - steps} prompt tokens (left pads 0, 5, 11) + {steps} decode steps",
        "positions_compared": int(real.sum()),
    }


def ensure_gguf(folder: Path, threads: int = 2, force: bool = False, log=print) -> tuple[Path, dict]:
    """The checked f32 GGUF of this model: converted (and cached) if missing or stale, its logits
    checked against gpt2np's in any case. (path to model.gguf, its manifest with this check.)"""
    return ensure_export(
        folder,
        "GGUF conversion",
        gguf_root(),
        MODEL_FILE,
        convert,
        check_logits,
        missing_for_conversion,
        threads,
        force,
        log,
    )


def describe_check(check: dict) -> str:
    return (
        f"logits within {check['max_abs_diff']:.2g} of gpt2np's (tolerance {check['tolerance']:g}: ggml's float16 GELU), "
        f"{check['max_abs_diff_ggml_gelu']:.2g} of gpt2np's with that GELU rounding copied in "
        f"({check['positions_compared']} positions: {check['batch']})"
    )


def describe(manifest: dict) -> str:
    """One line: how the GGUF was made, how llama.cpp runs it, how close its logits are."""
    return (
        f"{manifest['converter']}; float32 KV cache, flash attention off (impl_llamacpp.py); "
        f"{describe_check(manifest['check'])}"
    )


if __name__ == "__main__":
    sys.exit(cli_main(None, __doc__, "GGUF", ensure_gguf, describe))
