"""`gpt2np trace`: every activation point of one forward pass, saved to one safetensors file.

    gpt2np trace --model gpt2 "It will rain in the" "My dog is" --out trace.safetensors --dtype float64
    gpt2np trace --model DIR --ids "50256,50256,1026,481" --ids "40,765,284,4483" --pad-id 50256 --out t.safetensors

The second form traces fixed token ids, with no tokenizer (a model without tokenizer files,
such as one of `gpt2np random-model`'s with a small vocabulary, can be traced): each --ids (or
line of --ids-file) is a row; every id is real unless --pad-id (a row's leading run of it is
left padding) or --attention-mask (one per row, 0 = pad) says otherwise; rows of different
lengths are left-padded with the pad id (--pad-id, else the model's eos_token_id).

safetensors because C, C++, Rust, JavaScript, NumPy and torch all read it. The file holds

    input_ids, attention_mask, position_ids    [B, T] int64: the left-padded batch, as run
    hook_embed ... logits                      every point of gpt2np/hooks.py, [B, ...], the model's dtype
    generated_ids, generated_logits            with --generate N: [B, N] greedy tokens, [B, N, V]
                                               each step's next-token logits

and with --grads, the training half (backward.py), the gradients in the order backpropagation
computes them (tracefile.backward_position: from the loss back to the embeddings):

    labels                                     [B, T] int64: transformers' labels (shifted inside,
                                               -100 not counted); --labels, else next-token
                                               prediction with pads not counted (labels.labels_from_mask)
    loss                                       [1] the mean cross-entropy over the counted labels
    logits_grad ... hook_embed_grad            the loss's gradient at every point (TransformerLens's
                                               `<name>_grad`), the point's shape
    transformer.wte.weight ... transformer.ln_f.bias   every parameter's gradient, named as
                                               transformers' GPT2LMHeadModel.named_parameters()

and, as string metadata: format, gpt2np_version, model, checkpoint_sha256, dtype, mask_fill,
fill, config (JSON), names (JSON: the points in forward order), texts (JSON), with --grads grads
(JSON: the loss and the gradients in backward order), and in a float64
trace float32_error (JSON: per point, how far gpt2np's float32 forward lies from this trace,
measured as `gpt2np compare` measures; compare derives its tolerances from it).
docs/cross-checking.md describes the format for writing a trace from another language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import labels_or_default
from ..masks import position_ids_from_mask
from ..model import GPT2
from .common import add_model_args, load_model, load_model_and_tokenizer, read_prompts
from .measure import measure
from .overwrite import add_overwrite_flag, check_out_file, model_files
from .tracefile import FORMAT, activation_names_in, gradient_names_in, is_trace_file, save_trace


def trace_tensors(
    model, input_ids: np.ndarray, attention_mask: np.ndarray, grads: bool = False, labels=None
) -> dict[str, np.ndarray]:
    """The inputs and every activation point of one forward pass of a [B, T] left-padded batch;
    grads=True: also the labels (None: next-token prediction, pads not counted), the loss, the
    gradient at every point and every parameter's, in the order backpropagation computes them."""
    positions = position_ids_from_mask(attention_mask)  # [B, T]
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    if not grads:
        _, cache = model.run_with_cache(input_ids, attention_mask=attention_mask, position_ids=positions)
        return {**{k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}, **cache}
    inputs["labels"] = labels_or_default(labels, input_ids, attention_mask, model.config.vocab_size)  # [B, T]
    _, cache = model.run_with_cache(
        input_ids, attention_mask=attention_mask, position_ids=positions, labels=inputs["labels"], incl_bwd=True
    )  # every point, then every point's `<name>_grad`
    loss, parameters = model.loss_and_grads(input_ids, inputs["labels"], attention_mask, positions)
    tensors = {**{k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}, **cache}
    tensors |= {"loss": np.array(loss, dtype=model.dtype), **parameters}  # loss: a 0-d array, as torch's
    order = activation_names_in(tensors) + gradient_names_in(tensors)
    return {**{k: tensors[k] for k in inputs}, **{k: tensors[k] for k in order}}


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
        for name in activation_names_in(reference) + gradient_names_in(reference)
    }


def trace_metadata(
    model, model_name: str, checkpoint_sha256: str | None, texts: list[str], grads: Sequence[str] = ()
) -> dict[str, str]:
    """grads: the gradient names the trace holds, in backward order (metadata `grads`; none without --grads)."""
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
    } | ({"grads": json.dumps(list(grads))} if grads else {})


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
    grads: bool = False,
    labels=None,
) -> dict[str, str]:
    """Trace `model` on the batch and save it; with float32_model (for a float64 model), also
    measure how far that float32 model lies from this trace at each point. grads=True: the
    labels (None: next-token prediction), the loss and every gradient too. -> the metadata."""
    tensors = trace_tensors(model, input_ids, attention_mask, grads, labels)
    metadata = trace_metadata(model, model_name, checkpoint_sha256, list(texts), gradient_names_in(tensors))
    if float32_model is not None:
        float32 = trace_tensors(float32_model, input_ids, attention_mask, grads, labels)
        errors = float32_errors(tensors, float32, metadata)
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
    p.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin, unless --ids)")
    add_model_args(p)
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    add_overwrite_flag(p, "--out")
    p.add_argument(
        "--generate", type=int, default=0, metavar="N", help="also N greedy tokens and each step's next-token logits"
    )
    p.add_argument(
        "--grads",
        action="store_true",
        help="also the labels, the loss, the gradient at every point (<name>_grad) and every parameter's gradient "
        "(transformers' names), in the order backpropagation computes them",
    )
    p.add_argument(
        "--labels",
        action="append",
        metavar="LABELS",
        help="with --grads: the labels of each row, e.g. --labels=-100,-100,1026,481 (with '=': a value that begins "
        "with - is otherwise read as an option; repeatable, one per row in order; "
        "transformers' convention: label t is predicted at t - 1, -100 not counted). Default: the inputs "
        "(next-token prediction), pads and each row's first real token not counted",
    )
    ids = p.add_argument_group(
        "token ids instead of prompts (no tokenizer needed)",
        "Each --ids (or each line of --ids-file) is one row of the batch, its ids separated by commas or spaces. "
        "Every id is a real token unless --pad-id or --attention-mask says otherwise; rows of different lengths are "
        "left-padded with the pad id (--pad-id, else the model's eos_token_id).",
    )
    ids.add_argument("--ids", action="append", metavar="IDS", help='one row, e.g. "50256,50256,1026,481" (repeatable)')
    ids.add_argument("--ids-file", metavar="FILE", help="a file of rows, one per line")
    ids.add_argument(
        "--pad-id", type=int, metavar="ID", help="the pad token: a row's leading run of it is left padding (mask 0)"
    )
    ids.add_argument(
        "--attention-mask",
        action="append",
        metavar="MASK",
        help='the mask of each row, e.g. "0,0,1,1" (repeatable, one per row in order; 0 = pad)',
    )
    p.set_defaults(run=cmd_trace)


def parse_row(text: str, what: str) -> list[int]:
    """'50256,50256,1026,481' or '50256 50256 1026 481' -> [50256, 50256, 1026, 481]."""
    pieces = text.replace(",", " ").strip().removeprefix("[").removesuffix("]").split()
    try:
        row = [int(piece) for piece in pieces]
    except ValueError:
        bad = next(piece for piece in pieces if not piece.lstrip("-").isdigit())
        raise InputError(f"{what}: {bad!r} is not an integer; give ids separated by commas or spaces") from None
    if not row:
        raise InputError(f"{what} is empty; give at least one token id")
    for i in row:
        check_int64(i, what)
    return row


def check_int64(value: int, what: str) -> None:
    """An id NumPy's int64 cannot hold is no token id (np.array would raise OverflowError)."""
    if not -(2**63) <= value < 2**63:
        raise InputError(
            f"{what}: {value} is not a token id (far beyond any vocabulary); give ids in 0 .. vocab_size - 1"
        )


def batch_from_ids(args, eos_token_id: int | None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """--ids / --ids-file / --pad-id / --attention-mask -> ([B, T] ids, [B, T] mask, pad id), left-padded."""
    if args.ids and args.ids_file:
        raise InputError("give the rows with --ids or with --ids-file, not both")
    if args.ids:
        rows = [parse_row(text, f"--ids {text!r}") for text in args.ids]
    else:
        if not Path(args.ids_file).is_file():
            raise InputError(f"--ids-file {args.ids_file}: no such file (one row of token ids per line)")
        lines = [line for line in Path(args.ids_file).read_text().splitlines() if line.strip()]
        if not lines:
            raise InputError(f"--ids-file {args.ids_file}: no rows (one row of token ids per line)")
        rows = [parse_row(line, f"--ids-file {args.ids_file}, line {i + 1}") for i, line in enumerate(lines)]
    if args.pad_id is not None:
        check_int64(args.pad_id, "--pad-id")
    pad = args.pad_id if args.pad_id is not None else eos_token_id
    if args.attention_mask:
        if len(args.attention_mask) != len(rows):
            raise InputError(f"{len(args.attention_mask)} --attention-mask for {len(rows)} rows; give one per row")
        masks = [parse_row(text, f"--attention-mask {text!r}") for text in args.attention_mask]
        for row, mask in zip(rows, masks):
            if len(mask) != len(row) or not set(mask) <= {0, 1}:
                raise InputError(
                    f"--attention-mask {','.join(map(str, mask))} does not fit its row {','.join(map(str, row))}: "
                    "give one 0 (pad) or 1 (real token) per id"
                )
    elif args.pad_id is not None:  # a row's leading run of the pad id is its left padding
        masks = [list(np.cumsum(np.asarray(row) != args.pad_id) > 0) for row in rows]
    else:
        masks = [[1] * len(row) for row in rows]
    T = max(len(row) for row in rows)
    if any(len(row) < T for row in rows) and pad is None:
        raise InputError(
            "the rows have different lengths and this model has no eos_token_id to pad with: pass --pad-id"
        )
    input_ids = np.array([[pad] * (T - len(row)) + row for row in rows], dtype=np.int64)  # [B, T]
    attention_mask = np.array([[0] * (T - len(row)) + list(map(int, m)) for row, m in zip(rows, masks)], np.int64)
    return input_ids, attention_mask, pad


def parse_labels(args, input_ids: np.ndarray) -> np.ndarray | None:
    """--labels, one per row (a row shorter than the batch is left-padded with -100, as its ids
    are with pads) -> [B, T] int64; None without --labels (the default: next-token prediction)."""
    if not args.labels:
        return None
    if not args.grads:
        raise InputError("--labels is for the gradients: pass --grads with it (or leave --labels out)")
    B, T = input_ids.shape
    if len(args.labels) != B:
        raise InputError(f"{len(args.labels)} --labels for {B} rows; give one per row, in order")
    rows = [parse_row(text, f"--labels {text!r}") for text in args.labels]
    for row in rows:
        if len(row) > T:
            raise InputError(
                f"--labels {','.join(map(str, row))} has {len(row)} labels, but the rows are {T} tokens long; "
                "give one label per token (-100 for a token not counted)"
            )
    return np.array([[-100] * (T - len(row)) + row for row in rows], dtype=np.int64)  # [B, T]


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
    args.out = check_out_file(  # the overwrite rule (tools/overwrite.py); a symlink's target with --overwrite
        args.out,
        overwrite=args.overwrite,
        protected=model_files(args.model, args.tokenizer),
        is_ours=is_trace_file,
        ours="a trace gpt2np wrote (a safetensors file whose metadata says format gpt2np-trace/1)",
    )
    if args.ids or args.ids_file:
        if args.prompts:
            raise InputError("give prompts or --ids / --ids-file, not both")
        if args.tokenizer:
            raise InputError("--tokenizer has no use with --ids: the ids are traced as given")
        model = load_model(args)  # no tokenizer: a model without tokenizer files can be traced
        input_ids, attention_mask, pad_token_id = batch_from_ids(args, model.config.eos_token_id)
        prompts: list[str] = []
    else:
        prompts = read_prompts(args)
        model, tok = load_model_and_tokenizer(args)
        tok.padding_side, tok.pad_token = "left", tok.eos_token
        batch = tok(prompts, padding=True)
        input_ids, attention_mask, pad_token_id = batch["input_ids"], batch["attention_mask"], tok.pad_token_id
    if (attention_mask.sum(axis=1) == 0).any():
        raise InputError("a row has no real token (a prompt that is empty, or all pads); give some")
    labels = parse_labels(args, input_ids)
    float32_model = None
    if model.dtype == np.float64:  # the truth: also measure how far a float32 run lies from it
        float32_model = GPT2.from_pretrained(
            args.model, mask_fill=args.mask_fill, verify=False
        )  # the same file, mapped again
    metadata = write_trace(
        args.out,
        model,
        input_ids,
        attention_mask,
        model_name=args.model,
        checkpoint_sha256=checkpoint_sha256(args.model, not args.no_verify),
        texts=prompts,
        generate=args.generate,
        pad_token_id=pad_token_id,
        float32_model=float32_model,
        grads=args.grads,
        labels=labels,
    )
    B, T = input_ids.shape
    n_points = len(json.loads(metadata["names"]))
    n_grads = len(json.loads(metadata.get("grads", "[]")))
    print(
        f"wrote {args.out}: {n_points} points of a [{B}, {T}] batch, {metadata['dtype']}, mask_fill {metadata['mask_fill']}"
        + (f", the loss and {n_grads - 1} gradients" if args.grads else "")
        + (f", {args.generate} generated tokens" if args.generate else "")
        + (", with float32 error per point" if float32_model is not None else "")
    )
    return 0
