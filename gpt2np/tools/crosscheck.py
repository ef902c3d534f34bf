"""`gpt2np crosscheck`: gpt2np against transformers, number by number, on the same weights.

Both libraries load the same checkpoint folder and run the same left-padded batch and attention
mask. Each derives the position ids itself: gpt2np from the mask (its default), transformers
with the function its own `generate` uses, so positions are checked too, not shared. We compare

- every hidden state (embeddings, after each block, after ln_f), as max |difference|;
- the logits;
- the top-1 token at every position;
- greedy generation, token for token,

at real tokens only: what a pad position holds means nothing, and the two libraries fill it
differently on purpose (gpt2np gives a pad's query zero attention, see attention.py).
This runs for each mask fill gpt2np offers (transformers always uses finfo.min) and in
float32 and float64. torch and transformers are an optional extra: `pip install -e '.[test]'`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import GPT2npError, InputError
from ..masks import MASK_FILLS
from .explain import SEED_SENTENCES, left_padded

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Tolerance:
    logits: float  # max |logits difference| allowed, absolute
    hidden: float  # max |hidden-state difference| allowed, as a fraction of the layer's largest |value|


# float32: 1e-4 on the logits. The two libraries add the same products in different orders,
#   and each float32 sum is off by a few units in the 7th digit; on the random test models the
#   logits differ by ~1e-5 at most. Hidden states are judged relative to the layer's largest
#   value, because GPT-2's residual stream holds a few dimensions in the hundreds (thousands
#   in the real model's late layers), where one float32 step is already 3e-5 (2e-4): an
#   absolute tolerance would have to fit the worst layer. Measured: ~1e-7 of the largest value.
# float64: 1e-9 on the logits, 1e-12 relative on hidden states. Measured differences are
#   ~1e-14 and ~2e-16 (the same order-of-summation noise, 9 digits further down). Anything
#   done in float32 by mistake (a constant, the mask, a cast) shows up around 1e-6 or larger,
#   so these catch it, with a margin of a thousand over the noise.
TOLERANCES = {"float32": Tolerance(logits=1e-4, hidden=1e-5), "float64": Tolerance(logits=1e-9, hidden=1e-12)}


@dataclass
class Comparison:
    dtype: str
    fill: str
    hidden: list[float]  # max |difference| of each hidden state at real tokens (n_layer + 1)
    hidden_scale: list[float]  # transformers' largest |value| of each hidden state
    logits: float  # max |difference| of the logits at real tokens
    top1_agree: int  # positions where both pick the same most likely token
    top1_total: int
    greedy_agree: int  # generated tokens that are the same
    greedy_total: int
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_torch_transformers():
    """torch and transformers, with torch kept to 2 threads; a clear error when missing."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise GPT2npError(
            f"crosscheck compares against transformers, which is not installed ({e}); install the test extra: "
            "pip install -e '.[test]' (it pins torch==2.13.0, the CPU build; a plain `pip install torch` pulls several GB of CUDA)"
        ) from None
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return torch, transformers


def load_hf_model(folder, dtype: str):
    """transformers' GPT2LMHeadModel from the same folder, in float32 or float64, eager attention
    (the plain softmax(q k^T + mask) v, the same arithmetic as ours)."""
    torch, transformers = import_torch_transformers()
    model = transformers.GPT2LMHeadModel.from_pretrained(
        str(folder), attn_implementation="eager", dtype=getattr(torch, dtype)
    )
    return model.eval()


def hf_forward(hf, input_ids: np.ndarray, attention_mask: np.ndarray):
    """transformers' hidden states (n_layer + 1 of [B, T, C]) and logits [B, T, V] as NumPy, with
    the position ids transformers' `generate` gives a left-padded batch (its plain forward would
    use arange, which is wrong for the padded rows)."""
    import torch

    ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
    with torch.no_grad():
        positions = hf._prepare_position_ids_for_generation(ids, {"attention_mask": mask})  # [B, T]
        out = hf(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states], out.logits.numpy()


def hf_generate(hf, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int, pad_token_id: int):
    """transformers' greedy tokens [B, T + n] and the raw logits of each step [n, B, V]."""
    import torch

    with torch.no_grad():
        out = hf.generate(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences.numpy(), np.stack([step.numpy() for step in out.logits])


def top2_gap(logits: np.ndarray) -> np.ndarray:
    """[..., V] -> [...]: how far the most likely token is ahead of the second."""
    top2 = np.partition(logits, -2, axis=-1)[..., -2:]  # [..., 2] the two largest, in some order
    return np.abs(top2[..., 1] - top2[..., 0])


def same_width(a: np.ndarray, b: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the shorter [B, *] token array on the right (a library stops when every row is done)."""
    width = max(a.shape[1], b.shape[1])

    def padded(x: np.ndarray) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad)

    return padded(a), padded(b)


def compare_greedy(
    ours: np.ndarray, theirs: np.ndarray, their_logits: np.ndarray, prompt_len: int, pad: int, tol: Tolerance
):
    """Token-for-token agreement of two greedy runs -> (agreeing, total, failures, notes).

    A row may legitimately diverge where transformers' two best logits are closer than the
    two libraries' difference can be (2 x tolerance): a near tie, where either choice is
    right. Anywhere else, a different token is an error."""
    ours, theirs = same_width(ours[:, prompt_len:], theirs[:, prompt_len:], pad)  # [B, n] new tokens
    agree = ours == theirs  # [B, n]
    failures, notes = [], []
    for row in np.flatnonzero(~agree.all(axis=1)):
        step = int(np.argmin(agree[row]))  # the first step where the row differs
        gap = float(top2_gap(their_logits[step, row])) if step < len(their_logits) else float("inf")
        what = f"greedy row {row} differs from step {step} (ours {ours[row, step]}, transformers {theirs[row, step]})"
        if gap <= 2 * tol.logits:
            notes.append(f"{what}: a near tie, transformers' top two logits differ by {gap:.1e}")
        else:
            failures.append(f"{what}, where transformers' top two logits differ by {gap:.2g}")
    return int(agree.sum()), agree.size, failures, notes


def compare(
    model,
    hf,
    input_ids,
    attention_mask,
    max_new_tokens: int,
    tol: Tolerance,
    pad_token_id: int,
    hf_outputs=None,
    hf_generation=None,
) -> Comparison:
    """One gpt2np model against one transformers model on one batch.

    hf_outputs / hf_generation: transformers' results if already computed (they do not depend
    on gpt2np's fill, so crosscheck runs them once per dtype)."""
    real = attention_mask == 1  # [B, T] the positions that mean something
    their_hidden, their_logits = hf_outputs or hf_forward(hf, input_ids, attention_mask)
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)  # positions from the mask
    hidden = [float(np.abs(a[real] - b[real]).max()) for a, b in zip(out.hidden_states, their_hidden)]  # [N, C] each
    scale = [float(np.abs(b[real]).max()) for b in their_hidden]
    logits = float(np.abs(out.logits[real] - their_logits[real]).max())  # [N, V]
    ours_top1, theirs_top1 = out.logits[real].argmax(-1), their_logits[real].argmax(-1)  # [N]
    c = Comparison(
        dtype=str(model.dtype),
        fill=str(model.mask_fill),
        hidden=hidden,
        hidden_scale=scale,
        logits=logits,
        top1_agree=int((ours_top1 == theirs_top1).sum()),
        top1_total=int(real.sum()),
        greedy_agree=0,
        greedy_total=0,
    )

    for i, (d, s) in enumerate(zip(hidden, scale)):
        if not d <= tol.hidden * s:  # `not <=` so that a NaN fails too
            c.failures.append(
                f"hidden state {i} ({hidden_label(i, len(hidden) - 1)}): max |diff| {d:.2e} > {tol.hidden:g} x {s:.3g}"
            )
    if not logits <= tol.logits:
        c.failures.append(f"logits: max |diff| {logits:.2e} > {tol.logits:g}")
    # A different top-1 is only an error away from near ties (see compare_greedy).
    differ = (ours_top1 != theirs_top1) & (top2_gap(their_logits[real]) > 2 * tol.logits)  # [N]
    if differ.any():
        c.failures.append(f"top-1: {int(differ.sum())} positions pick a different token away from any near tie")

    theirs, their_step_logits = hf_generation or hf_generate(
        hf, input_ids, attention_mask, max_new_tokens, pad_token_id
    )
    ours = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id
    )
    c.greedy_agree, c.greedy_total, failures, c.notes = compare_greedy(
        ours, theirs, their_step_logits, input_ids.shape[1], pad_token_id, tol
    )
    c.failures += failures
    return c


def crosscheck(
    folder,
    input_ids,
    attention_mask,
    dtypes=DTYPES,
    fills=MASK_FILLS,
    max_new_tokens: int = 10,
    tolerances=TOLERANCES,
    pad_token_id: int | None = None,
) -> list[Comparison]:
    """Every (dtype, fill) of gpt2np against transformers in that dtype, on one batch."""
    from ..model import GPT2

    input_ids, attention_mask = np.asarray(input_ids, dtype=np.int64), np.asarray(attention_mask, dtype=np.int64)
    results = []
    for dtype in dtypes:
        loaded = GPT2.from_pretrained(folder, dtype=dtype, verify=False)  # the weights, once per dtype
        # (the two ignores: pad is None for a config with eos_token_id null and no pad_token_id
        # given; that case is not handled, found by mypy and reported in issue 15)
        pad = loaded.config.eos_token_id if pad_token_id is None else pad_token_id
        hf = load_hf_model(folder, dtype)
        hf_outputs = hf_forward(hf, input_ids, attention_mask)
        hf_generation = hf_generate(hf, input_ids, attention_mask, max_new_tokens, pad)  # type: ignore[arg-type]
        for fill in fills:
            model = GPT2(loaded.config, loaded.weights, dtype=dtype, mask_fill=fill)  # same weights, another fill
            results.append(
                compare(
                    model,
                    hf,
                    input_ids,
                    attention_mask,
                    max_new_tokens,
                    tolerances[dtype],
                    pad,  # type: ignore[arg-type]
                    hf_outputs,
                    hf_generation,
                )
            )
        del hf
    return results


# --- the report ----------------------------------------------------------------------------


def hidden_label(i: int, n_layer: int) -> str:
    """transformers' hidden_states order: embeddings, after block 1 .. n-1, after block n + ln_f."""
    if i == 0:
        return "embeddings"
    return f"block {i} + ln_f" if i == n_layer else f"after block {i}"


def format_report(results: list[Comparison], tolerances=TOLERANCES) -> str:
    lines = []
    for dtype in dict.fromkeys(r.dtype for r in results):
        rows = [r for r in results if r.dtype == dtype]
        tol = tolerances[dtype]
        lines.append(f"{dtype}: max |gpt2np - transformers| at real tokens, for each of gpt2np's mask fills")
        lines.append(
            f"  (fails above: logits {tol.logits:g}; hidden states {tol.hidden:g} x the layer's largest |value|)"
        )
        lines.append(f"  {'':<18}" + "".join(f"{'fill ' + r.fill:>14}" for r in rows) + f"{'largest |value|':>18}")
        n_layer = len(rows[0].hidden) - 1
        for i in range(n_layer + 1):
            lines.append(
                f"  {hidden_label(i, n_layer):<18}"
                + "".join(f"{r.hidden[i]:>14.2e}" for r in rows)
                + f"{rows[0].hidden_scale[i]:>18.4g}"
            )
        lines.append(f"  {'logits':<18}" + "".join(f"{r.logits:>14.2e}" for r in rows))
        lines.append(f"  {'top-1 agree':<18}" + "".join(f"{f'{r.top1_agree}/{r.top1_total}':>14}" for r in rows))
        lines.append(f"  {'greedy tokens':<18}" + "".join(f"{f'{r.greedy_agree}/{r.greedy_total}':>14}" for r in rows))
        for r in rows:
            lines += [f"  note ({r.dtype}, fill {r.fill}): {n}" for n in r.notes]
            lines += [f"  MISMATCH ({r.dtype}, fill {r.fill}): {f}" for f in r.failures]
        lines.append("")
    n_failed = sum(bool(r.failures) for r in results)
    lines.append(
        f"FAILED: {n_failed} of {len(results)} runs differ beyond tolerance"
        if n_failed
        else f"OK: all {len(results)} runs (dtype x fill) agree with transformers within tolerance"
    )
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def add_parser(sub) -> None:
    # Not add_model_args: crosscheck runs every fill and both dtypes, so a single --mask-fill
    # and --dtype would mislead; repeatable --fill and --dtype choose among them instead.
    p = sub.add_parser(
        "crosscheck",
        help="compare gpt2np with transformers layer by layer on the same weights",
        description="Run gpt2np and transformers on the same weights and left-padded batch; print max |difference| "
        "per hidden state, of the logits, top-1 and greedy agreement, per mask fill, in float32 and float64. "
        "Exits 1 on a mismatch. Needs torch + transformers: pip install -e '.[test]'.",
    )
    p.add_argument(
        "prompts", nargs="*", help=f"prompts to batch (default: {', '.join(repr(s) for s in SEED_SENTENCES)})"
    )
    p.add_argument(
        "--model", default="gpt2", help="a model name or folder with config.json + model.safetensors (default: gpt2)"
    )
    p.add_argument("--tokenizer", default=None, help="where the tokenizer files are (default: the model's)")
    p.add_argument("--no-verify", action="store_true", help="skip the size/sha256 check of known checkpoint files")
    p.add_argument("--max-new-tokens", type=int, default=10, help="greedy tokens to compare per prompt (default 10)")
    # Repeatable single values, written --fill=-inf: argparse would read a bare "-inf" as a flag.
    p.add_argument(
        "--fill",
        action="append",
        choices=MASK_FILLS,
        help="a gpt2np mask fill to check, as --fill=-inf (repeatable; default: all)",
    )
    p.add_argument("--dtype", action="append", choices=DTYPES, help="a precision to check (repeatable; default: both)")
    p.add_argument(
        "--tol-float32",
        type=float,
        default=TOLERANCES["float32"].logits,
        help="max |logits diff| in float32 (default 1e-4)",
    )
    p.add_argument(
        "--tol-float64",
        type=float,
        default=TOLERANCES["float64"].logits,
        help="max |logits diff| in float64 (default 1e-9)",
    )
    p.set_defaults(run=cmd_crosscheck)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from ..config import GPT2Config
    from ..hub import resolve_model_files
    from ..tokenizer import Tokenizer

    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if any(not p for p in args.prompts):
        raise InputError("a prompt is empty; every prompt needs at least one token")
    _, transformers = import_torch_transformers()  # fail early, before loading anything
    transformers.utils.logging.set_verbosity_error()  # no progress bars or notices in the report
    transformers.utils.logging.disable_progress_bar()
    folder = resolve_model_files(args.model, verify=not args.no_verify)["model.safetensors"].parent
    tok = Tokenizer.from_pretrained(args.tokenizer or args.model, verify=not args.no_verify)
    prompts = args.prompts or list(SEED_SENTENCES)
    input_ids, attention_mask = left_padded(tok, prompts)  # [B, T] each, pad = eos
    vocab = GPT2Config.from_json_file(folder / "config.json").vocab_size
    if input_ids.max() >= vocab:
        raise InputError(
            f"the prompts have token ids up to {input_ids.max()} but the model's vocabulary has {vocab}; "
            "pass the model's own tokenizer with --tokenizer"
        )
    tolerances = {
        "float32": Tolerance(args.tol_float32, TOLERANCES["float32"].hidden),
        "float64": Tolerance(args.tol_float64, TOLERANCES["float64"].hidden),
    }
    print(f"gpt2np vs transformers {transformers.__version__} on {folder}")
    print(
        f"batch: {len(prompts)} prompts left-padded to {input_ids.shape[1]} tokens ({int(attention_mask.sum())} real), "
        f"position ids from the mask (each library its own), {args.max_new_tokens} greedy tokens\n"
    )
    sys.stdout.flush()
    dtypes, fills = args.dtype or DTYPES, args.fill or MASK_FILLS
    results = crosscheck(
        folder, input_ids, attention_mask, dtypes, fills, args.max_new_tokens, tolerances, tok.eos_token_id
    )
    print(format_report(results, tolerances))
    return 1 if any(r.failures for r in results) else 0
