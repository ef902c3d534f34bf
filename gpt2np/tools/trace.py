"""`gpt2np trace`: every activation point of one forward pass, saved to one safetensors file.

    gpt2np trace --model gpt2 "It will rain in the" "My dog is" --out trace.safetensors --dtype float64

safetensors because C, C++, Rust, JavaScript, NumPy and torch all read it. The file holds

    input_ids, attention_mask, position_ids    [B, T] int64: the left-padded batch, as run
    hook_embed ... logits                      every point of gpt2np/hooks.py, [B, ...], the model's dtype
    generated_ids, generated_logits            with --generate N: [B, N] greedy tokens, [B, N, V]
                                               each step's next-token logits

and, as string metadata: format, gpt2np_version, model, checkpoint_sha256, dtype, mask_fill,
fill, config (JSON), names (JSON: the points in forward order), texts (JSON), and in a float64
trace float32_error (JSON: per point, how far gpt2np's float32 forward lies from this trace,
measured as `gpt2np compare` measures; compare derives its tolerances from it).
docs/cross-checking.md describes the format for writing a trace from another language.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..masks import position_ids_from_mask
from ..model import GPT2
from .common import add_model_args, load_model_and_tokenizer, read_prompts
from .measure import measure
from .tracefile import FORMAT, activation_names_in, save_trace


def trace_tensors(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs and every activation point of one forward pass of a [B, T] left-padded batch."""
    positions = position_ids_from_mask(attention_mask)  # [B, T]
    _, cache = model.run_with_cache(input_ids, attention_mask=attention_mask, position_ids=positions)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    return {**{k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}, **cache}


def generation_tensors(
    model, input_ids: np.ndarray, attention_mask: np.ndarray, n_new: int, pad_token_id: int | None
) -> dict[str, np.ndarray]:
    """Greedy continuation and each step's next-token logits [B, N, V].

    The logits come from one forward pass over prompt + generated tokens (the generated ones
    all real, as generate counts them): position T - 1 + s predicts step s's token. That is
    what each cached decode step computes, up to float rounding; `generate` picked exactly
    argmax of these (checked here)."""
    T = input_ids.shape[1]
    ids = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=n_new, pad_token_id=pad_token_id
    )  # [B, T + n]
    n = ids.shape[1] - T
    mask = np.concatenate(
        [attention_mask, np.ones((ids.shape[0], n), dtype=attention_mask.dtype)], axis=1
    )  # [B, T + n]
    logits = model(ids[:, :-1], attention_mask=mask[:, :-1]).logits[:, T - 1 :]  # [B, n, V]
    return {"generated_ids": ids[:, T:].astype(np.int64), "generated_logits": np.ascontiguousarray(logits)}


def float32_errors(
    reference: dict[str, np.ndarray], float32: dict[str, np.ndarray], metadata: dict[str, str]
) -> dict[str, float]:
    """Per point, max |float32 - reference| as `gpt2np compare` measures it (same cells)."""
    mask = reference["attention_mask"]
    return {
        name: measure(name, reference[name], float32[name], mask, metadata).diff
        for name in activation_names_in(reference)
    }


def trace_metadata(model, model_name: str, checkpoint_sha256: str | None, texts: list[str]) -> dict[str, str]:
    from .. import __version__

    return {
        "format": FORMAT,
        "gpt2np_version": __version__,
        "model": str(model_name),
        "checkpoint_sha256": checkpoint_sha256 or "unknown",
        "dtype": str(model.dtype),
        "mask_fill": str(model.mask_fill),
        "fill": repr(float(model.fill)),
        "config": json.dumps(model.config.to_dict()),
        "names": json.dumps(model.activation_names()),
        "texts": json.dumps(texts),
    }


def write_trace(
    path,
    model,
    input_ids,
    attention_mask,
    model_name="",
    checkpoint_sha256=None,
    texts=(),
    generate: int = 0,
    pad_token_id=None,
    float32_model=None,
) -> dict[str, str]:
    """Trace `model` on the batch and save it; with float32_model (for a float64 model), also
    measure how far that float32 model lies from this trace at each point. -> the metadata."""
    tensors = trace_tensors(model, input_ids, attention_mask)
    metadata = trace_metadata(model, model_name, checkpoint_sha256, list(texts))
    if float32_model is not None:
        errors = float32_errors(tensors, trace_tensors(float32_model, input_ids, attention_mask), metadata)
        metadata["float32_error"] = json.dumps({k: float(f"{v:.3g}") for k, v in errors.items()})
    if generate:
        tensors.update(generation_tensors(model, input_ids, attention_mask, generate, pad_token_id))
    save_trace(path, tensors, metadata)
    return metadata


# --- the command ---------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "trace",
        help="save every intermediate of a forward pass to a safetensors file",
        description="Run the prompts as one left-padded batch and save every activation point (hook_embed, "
        "blocks.{i}.attn.hook_q, ..., logits), the inputs and metadata to one safetensors file, for "
        "`gpt2np compare` or your own implementation (docs/cross-checking.md).",
    )
    p.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    add_model_args(p)
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument(
        "--generate", type=int, default=0, metavar="N", help="also N greedy tokens and each step's next-token logits"
    )
    p.set_defaults(run=cmd_trace)


def checkpoint_sha256(model_name: str, verify: bool) -> str | None:
    from ..hub import resolve_model_files, sha256_of

    try:
        return sha256_of(resolve_model_files(model_name, verify=verify, local_files_only=True)["model.safetensors"])
    except Exception:  # noqa: BLE001  the model loaded, so this cannot really fail; the hash is "when known"
        return None


def cmd_trace(args) -> int:
    if args.generate < 0:
        raise InputError(f"--generate must be 0 or more tokens, got {args.generate}")
    if not str(args.out).endswith(".safetensors"):
        raise InputError(f"--out {args.out!r}: name the file *.safetensors (it is a safetensors file)")
    if Path(args.out).is_dir():  # before the model runs: safetensors' own error would come after it
        raise InputError(
            f"--out {args.out!r} is a directory; name the file to write, e.g. {Path(args.out) / 'trace.safetensors'}"
        )
    prompts = read_prompts(args)
    model, tok = load_model_and_tokenizer(args)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(prompts, padding=True)
    if (batch["attention_mask"].sum(axis=1) == 0).any():
        raise InputError("a prompt is empty (it has no tokens); give some text")
    float32_model = None
    if model.dtype == np.float64:  # the truth: also measure how far a float32 run lies from it
        float32_model = GPT2.from_pretrained(
            args.model, mask_fill=args.mask_fill, verify=False
        )  # the same file, mapped again
    metadata = write_trace(
        args.out,
        model,
        batch["input_ids"],
        batch["attention_mask"],
        model_name=args.model,
        checkpoint_sha256=checkpoint_sha256(args.model, not args.no_verify),
        texts=prompts,
        generate=args.generate,
        pad_token_id=tok.pad_token_id,
        float32_model=float32_model,
    )
    B, T = batch["input_ids"].shape
    n_points = len(json.loads(metadata["names"]))
    print(
        f"wrote {args.out}: {n_points} points of a [{B}, {T}] batch, {metadata['dtype']}, mask_fill {metadata['mask_fill']}"
        + (f", {args.generate} generated tokens" if args.generate else "")
        + (", with float32 error per point" if float32_model is not None else "")
    )
    return 0
