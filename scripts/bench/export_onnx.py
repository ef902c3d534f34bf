"""Export transformers' GPT-2 to ONNX for the benchmark's ONNX Runtime column, once per model.

    python scripts/bench/export_onnx.py                  # the bench's model: real gpt2 if present, else the random 124M-shaped one
    python scripts/bench/export_onnx.py --model FOLDER   # any model folder (config.json + model.safetensors)
    python scripts/bench/export_onnx.py --force          # export again even if the cached one is there

(from the repository root; needs `pip install -e '.[bench]'`). The steps:

1. transformers' GPT2LMHeadModel from the same safetensors file gpt2np reads (eager attention),
   wrapped so that the graph takes the past keys/values as explicit inputs and returns the
   presents as outputs (a decode step is one call with P past positions; a prefill is a call
   with P = 0), the attention mask as an additive [B, 1, T, P + T] mask built from the [B, P + T]
   0/1 mask (finfo.min where masked, as transformers does), and `keep`, the positions whose
   logits are wanted (the last one for generation: no [T, 50257] output layer for nothing);
2. torch.onnx.export (the torch.export-based exporter, opset 18), every axis that varies dynamic;
3. onnxruntime.transformers.optimizer.optimize_model(model_type="gpt2"); which fusions happened
   is printed and kept. ONNX Runtime's own graph optimisations (ORT_ENABLE_ALL) run on top of
   that when a session loads the model;
4. the logits checked against gpt2np's (check_logits): a left-padded batch prefilled, then
   single-token steps fed through the past/present inputs, every real position compared with
   gpt2np's forward over the whole sequence. The largest |difference| must be <= TOLERANCE
   (1e-4, the tolerance of the transformers cross-check, tests/test_against_transformers.py),
   or nothing is cached.

The result lives under $GPT2NP_BENCH_MODELS/onnx (default weights/bench-models/onnx, beside the
bench's larger random models), in a folder named for the model folder and the sha256 of its
config.json and model.safetensors: changed weights get a new export (the stale one is removed).
Beside model.onnx, export.json records the fusions, versions and the check. The bench
(python -m scripts.bench) calls ensure_onnx before it times anything, which checks the logits
again (gpt2np may have changed since the export).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench.family import family_root  # noqa: E402
from scripts.bench.impl_onnxruntime import OnnxGPT2  # noqa: E402

TOLERANCE = 1e-4  # max |logits difference| allowed, the transformers cross-check's (issue 2)
OPSET = 18
MODEL_FILE = "model.onnx"
MANIFEST = "export.json"
NEEDED_TO_EXPORT = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")


class LogitsMismatch(Exception):
    """The exported graph's logits differ from gpt2np's by more than the tolerance (or are not finite)."""


class ExportUnavailable(Exception):
    """Something the export needs is not installed."""


# --- where the export lives ----------------------------------------------------------------


def fingerprint(folder: Path) -> str:
    """sha256 of config.json and model.safetensors: what the export was made from."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def onnx_root() -> Path:
    return family_root() / "onnx"


def cache_dir(folder: Path, digest: str | None = None, root: Path | None = None) -> Path:
    """The export of this model: <root (onnx_root)>/<folder name>-<16 hex digits of its fingerprint>."""
    return (root or onnx_root()) / f"{Path(folder).name}-{(digest or fingerprint(folder))[:16]}"


# --- the logits check ----------------------------------------------------------------------


def max_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs|; inf when a shape differs or a value is not finite (never a NaN that
    compares False against the tolerance and passes)."""
    if ours.shape != theirs.shape:
        return float("inf")
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return float(diff.max()) if diff.size and np.isfinite(diff).all() else float("inf")


def require_equal(
    diff: float, tolerance: float, what: str, who: str = "ONNX Runtime", script: str = "export_onnx"
) -> None:
    if not diff <= tolerance:  # `not <=`: a NaN fails too
        raise LogitsMismatch(
            f"{what}: {who}'s logits differ from gpt2np's by {diff:.3g} (tolerance {tolerance:g}); "
            f"the conversion is wrong or stale: rerun `python scripts/{script}.py --force` and compare the two by hand"
        )


def check_batch(vocab_size: int, seed: int = 25) -> tuple[np.ndarray, np.ndarray, int]:
    """A left-padded [3, 24 + 4] batch (pads 0, 5 and 11 on the left of the 24-token prompts),
    the mask, and how many of its tokens are fed one at a time after the prompt (4)."""
    prompt, steps = 24, 4
    ids = np.random.default_rng(seed).integers(0, vocab_size, size=(3, prompt + steps), dtype=np.int64)
    mask = np.ones_like(ids)
    for row, pads in enumerate((0, 5, 11)):
        mask[row, :pads] = 0
    ids[mask == 0] = 0
    return ids, mask, steps


def onnx_logits(graph: OnnxGPT2, ids: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """[B, T, V] logits from the graph: the prompt in one call (P = 0), then `steps` calls of one
    token each, the presents of each call fed back as the next call's past."""
    B, T = ids.shape
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # transformers' and gpt2np's, pads at 0
    prompt = T - steps
    logits, past = graph.run(
        ids[:, :prompt], mask[:, :prompt], positions[:, :prompt], np.arange(prompt), graph.empty_past(B)
    )
    out = [logits]
    for t in range(prompt, T):
        logits, past = graph.run(ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], np.array([0]), past)
        out.append(logits)
    return np.concatenate(out, axis=1)


def check_logits(folder: Path, onnx_path: Path, threads: int = 2) -> dict:
    """gpt2np's logits (one forward over the whole left-padded batch) against the graph's
    (prefill, then single-token steps through its past inputs), at every real position.
    Raises LogitsMismatch above TOLERANCE; returns what was compared and the difference."""
    from gpt2np import GPT2

    graph = OnnxGPT2(onnx_path, threads)
    model = GPT2.from_pretrained(folder)
    if graph.vocab_size != model.config.vocab_size:
        raise LogitsMismatch(
            f"the graph has {graph.vocab_size} logits per position, the model {model.config.vocab_size}"
        )
    ids, mask, steps = check_batch(model.config.vocab_size)
    ours = model(ids, attention_mask=mask).logits  # [B, T, V]
    theirs = onnx_logits(graph, ids, mask, steps)
    real = mask.astype(bool)  # pads' logits mean nothing: each library fills them its own way
    prefill = real.copy()
    prefill[:, -steps:] = False
    diffs = {
        "prefill": max_difference(ours[prefill], theirs[prefill]),
        "decode steps": max_difference(ours[:, -steps:], theirs[:, -steps:]),
    }
    for what, diff in diffs.items():
        require_equal(diff, TOLERANCE, f"{folder.name}, {what}")
    return {
        "tolerance": TOLERANCE,
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_prefill": diffs["prefill"],
        "max_abs_diff_decode": diffs["decode steps"],
        "batch": f"{ids.shape[0]} rows of {ids.shape[1] - steps} prompt tokens (left pads 0, 5, 11) + {steps} decode steps",
        "positions_compared": int(real.sum()),
    }


# --- the export ------------------------------------------------------------------------------


def missing_for_export() -> list[str]:
    from importlib.util import find_spec

    return [name for name in NEEDED_TO_EXPORT if find_spec(name) is None]


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "llama-cpp-python", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def export(folder: Path, out_dir: Path) -> dict:
    """folder (config.json + model.safetensors) -> out_dir/model.onnx, optimised; what happened."""
    import torch
    import transformers
    from onnxruntime.transformers import optimizer
    from transformers import GPT2LMHeadModel
    from transformers.cache_utils import DynamicCache

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    L, H, D = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head

    class WithExplicitPast(torch.nn.Module):
        """GPT2LMHeadModel with the cache as tensors in and out, and the mask built here."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, keep, *past):
            T, S = input_ids.shape[1], attention_mask.shape[1]  # new tokens, past + new
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(L)])
            query_pos = torch.arange(T) + (S - T)  # [T] where the new tokens sit among the S
            causal = torch.arange(S)[None, :] <= query_pos[:, None]  # [T, S]
            allowed = causal[None, None] & (attention_mask[:, None, None, :] > 0)  # [B, 1, T, S]
            fill = torch.finfo(torch.float32).min
            additive = torch.where(allowed, torch.zeros((), dtype=torch.float32), torch.full((), fill))
            out = self.lm(
                input_ids=input_ids,
                attention_mask=additive,  # 4-D: transformers uses it as it is
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=keep,  # a 1-D tensor of positions
            )
            presents = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)

    wrapper = WithExplicitPast(model).eval()  # eval(): a new Module starts in training mode (dropout on)
    # Example sizes all different and > 1, so that the exporter keeps each axis dynamic.
    B, T, P = 2, 4, 5
    example = (
        torch.zeros((B, T), dtype=torch.int64),
        torch.ones((B, P + T), dtype=torch.int64),
        torch.arange(P, P + T).expand(B, -1).contiguous(),
        torch.arange(1, T),
        *[torch.zeros((B, H, P, D)) for _ in range(2 * L)],
    )
    past_names = [f"past_{kv}_{i}" for i in range(L) for kv in ("key", "value")]
    present_names = [f"present_{kv}_{i}" for i in range(L) for kv in ("key", "value")]
    Dim = torch.export.Dim
    batch, seq, past_len, total, keep = Dim("batch"), Dim("seq"), Dim("past"), Dim("total"), Dim("keep")
    dynamic = (
        {0: batch, 1: seq},
        {0: batch, 1: total},
        {0: batch, 1: seq},
        {0: keep},
        tuple({0: batch, 2: past_len} for _ in past_names),
    )
    big = (Path(folder) / "model.safetensors").stat().st_size > 1_800_000_000  # protobuf's 2 GB limit
    raw = out_dir / "raw.onnx"
    start = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": nothing we use
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's and transformers' tracing notes, not errors
        torch.onnx.export(
            wrapper,
            example,
            str(raw),
            input_names=["input_ids", "attention_mask", "position_ids", "keep", *past_names],
            output_names=["logits", *present_names],
            dynamic_shapes=dynamic,
            dynamo=True,
            opset_version=OPSET,
            external_data=big,
            verbose=False,
        )
    exported = time.perf_counter() - start
    del wrapper, model

    start = time.perf_counter()
    optimized = optimizer.optimize_model(str(raw), model_type="gpt2", num_heads=H, hidden_size=cfg.n_embd)
    fusions = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    ops = Counter(node.op_type for node in optimized.model.graph.node)
    optimized.save_model_to_file(str(out_dir / MODEL_FILE), use_external_data_format=big)
    for f in out_dir.iterdir():  # the raw export (and its external data): not needed any more
        if f.name.startswith("raw.onnx"):
            f.unlink()
    return {
        "exporter": f"torch.onnx.export(dynamo=True, opset_version={OPSET})",
        "optimizer": "onnxruntime.transformers.optimizer.optimize_model(model_type='gpt2')",
        "fusions": fusions,
        "op_counts": dict(ops.most_common()),
        "attention_fused": any(k in fusions for k in ("Attention", "MultiHeadAttention", "GroupQueryAttention")),
        "export_s": exported,
        "optimize_s": time.perf_counter() - start,
    }


def ensure_export(folder: Path, kind: str, root: Path, file_name: str, make, check, needs, threads, force, log):
    """The checked conversion of a model (an ONNX graph here, a GGUF file in export_gguf.py):
    made with make(folder, tmp_dir) -> what happened, checked with check(folder, file, threads)
    -> the comparison (which raises LogitsMismatch), cached in root/<folder name>-<fingerprint>
    if missing or stale, checked again in any case. (path to the file, its manifest with this check.)"""
    folder = Path(folder).resolve()
    digest = fingerprint(folder)
    target = cache_dir(folder, digest, root)
    if force and target.exists():
        shutil.rmtree(target)
    if not (target / MANIFEST).is_file():
        missing = needs()
        if missing:
            raise ExportUnavailable(
                f"no {kind} of {folder} yet, and making one needs {', '.join(missing)}: pip install -e '.[bench]'"
            )
        log(f"making the {kind} of {folder} (once; cached in {target}) ...")
        tmp = root / f".{target.name}.{os.getpid()}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            made = make(folder, tmp)
            checked = check(folder, tmp / file_name, threads)  # nothing is cached unless it holds
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest = {"source": str(folder), "sha256": digest, "versions": versions(), **made, "check_at_export": checked}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        for stale in root.glob(f"{folder.name}-*"):  # conversions of this folder's older weights
            if stale.name != target.name:
                shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a half-made conversion is never mistaken for a whole one
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["check"] = check(folder, target / file_name, threads)  # again: gpt2np may have changed
    return target / file_name, manifest


def ensure_onnx(folder: Path, threads: int = 2, force: bool = False, log=print) -> tuple[Path, dict]:
    """The checked ONNX export of this model: made (and cached) if missing or stale, its logits
    checked against gpt2np's in any case. (path to model.onnx, its manifest with this check.)"""
    return ensure_export(
        folder, "ONNX export", onnx_root(), MODEL_FILE, export, check_logits, missing_for_export, threads, force, log
    )


def describe_fusions(manifest: dict) -> str:
    fused = ", ".join(f"{n} {k}" for k, n in manifest["fusions"].items()) or "none"
    ops = manifest["op_counts"]
    attention = (
        "attention fused"
        if manifest["attention_fused"]
        else f"attention left as MatMul/Softmax ({ops.get('MatMul', 0)} MatMul, {ops.get('Softmax', 0)} Softmax in the graph)"
    )
    return f"{fused}; {attention}"


def describe_check(check: dict) -> str:
    return (
        f"logits equal to gpt2np's within {check['max_abs_diff']:.2g} (tolerance {check['tolerance']:g}; "
        f"{check['positions_compared']} positions: {check['batch']})"
    )


def describe(manifest: dict) -> str:
    """One line: how the graph was made, what was fused, how close its logits are."""
    return f"{manifest['exporter']}; fusions: {describe_fusions(manifest)}; {describe_check(manifest['check'])}"


def cli_main(argv, doc: str, what: str, ensure, describe) -> int:
    """The command line of export_onnx.py and export_gguf.py: convert the bench's model (or
    --model), or find it converted, check it, say so."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a model folder or name (default: the bench's model)")
    p.add_argument("--force", action="store_true", help="convert again even if a cached conversion is there")
    p.add_argument("--threads", type=int, default=2, help="the runtime's threads for the logits check")
    args = p.parse_args(argv)
    from scripts.bench.family import resolve_model

    folder, source = resolve_model(args.model)
    try:
        path, manifest = ensure(folder, args.threads, args.force)
    except (ExportUnavailable, LogitsMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {source} ({folder})")
    print(f"{what}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    print(describe(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(None, __doc__, "ONNX", ensure_onnx, describe))
