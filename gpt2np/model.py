"""GPT-2: embeddings, n_layer blocks of (attention, MLP) on a residual stream, a final
LayerNorm, and the tied output layer. The forward pass reads top to bottom in `GPT2.forward`
-> `transformer` -> `block` -> attention.self_attention and layers.mlp; gpt2np/plain.py is the
same math on one page, without the speed-ups, tested equal (tests/test_plain.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .activation_cache import ActivationCache
from .attention import self_attention
from .backward import cross_entropy
from .config import GPT2Config
from .errors import InputError, ModelError
from .heap import tune_malloc
from .hooks import (
    NO_HOOKS,
    CutAtReplacements,
    HookFn,
    Hooks,
    Replay,
    Where,
    activation_names,
    axes,
    hook_names,
    scale_names,
    select,
)
from .inputs import check_attention_mask, check_input_ids, check_length, check_position_ids
from .kv_cache import KVCache
from .labels import counted, labels_or_default
from .layers import layer_norm, layer_norm_scale, lm_head, mlp
from .masks import AttentionMask, build_attention_mask, position_ids_from_mask, resolve_fill
from .weights import LayerNorm, Weights, load_weights

if TYPE_CHECKING:  # for the annotations only: model.py imports them lazily, where they are used
    from .scoring import Scores
    from .tokenizer import Tokenizer

DTYPES = ("float32", "float64")


def _check_dtype(dtype: DTypeLike) -> None:
    try:
        ok = str(np.dtype(dtype)) in DTYPES
    except TypeError:
        ok = False
    if not ok:
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r} (float16 would lose too much precision)")


def all_finite(x: np.ndarray) -> bool:
    """Is every value of x finite? x's min and max are NaN if any value is, and +-inf if any value
    is infinite: two passes that allocate nothing (np.isfinite(x).all() would make a boolean copy
    of x, 100 MB for the logits of 8 x 256 tokens)."""
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def non_finite_cells(a: np.ndarray, name: str) -> np.ndarray:
    """Where a point holds a value it should not: NaN or +-inf; in the masked scores -inf is the
    fill of the forbidden cells (mask_fill='-inf'), so there only NaN and +inf count."""
    if name.endswith("hook_attn_scores"):
        return np.isnan(a) | np.isposinf(a)
    return ~np.isfinite(a)


def describe_non_finite(
    a: np.ndarray, bad: np.ndarray, name: str, attention_mask: np.ndarray, dtype: np.dtype, hooked: bool
) -> str:
    """What the forward pass's first non-finite point holds, where, and what to do about it."""
    index = dict(zip(axes(name), np.argwhere(bad)[0]))  # the first bad cell, by axis name
    row = int(index["B"])
    column = attention_mask.shape[1] - a.shape[axes(name).index("T")] + int(index["T"])  # past tokens + t
    token = f"row {row}, token {column}" + (" (a pad)" if attention_mask[row, column] == 0 else "")
    found = [kind for kind, test in (("NaN", np.isnan), ("inf", np.isinf)) if test(a[bad]).any()]
    where = f"the forward pass went non-finite at {name} ({token}): {int(bad.sum())} values are {' and '.join(found)}"
    if hooked:
        return f"{where}, after a hook on {name} changed it; a hook must return finite numbers"
    return (
        f"{where}. The weights and inputs are finite, so the values outgrew {dtype} (max "
        f"{float(np.finfo(dtype).max):.3g}): the weights are too large for it (converted with a wrong scale?); "
        "try dtype='float64'"
    )


def _check_logits_to_keep(logits_to_keep: int) -> None:
    if not isinstance(logits_to_keep, (int, np.integer)) or isinstance(logits_to_keep, bool) or logits_to_keep < 0:
        raise InputError(
            f"logits_to_keep must be an integer >= 0 (0 keeps every position, N the last N), got {logits_to_keep!r}"
        )


@dataclass
class GPT2Output:
    logits: np.ndarray  # [B, T, vocab] ([B, N, vocab] with logits_to_keep=N)
    hidden_states: tuple[np.ndarray, ...] | None = None  # n_layer + 1 of [B, T, C], as transformers orders them
    attentions: tuple[np.ndarray, ...] | None = None  # n_layer of [B, H, T, T], the softmax weights
    loss: float | None = None  # with labels=: transformers' loss, the mean -log p over the counted labels

    def __getitem__(self, key: str) -> Any:  # out["logits"], as with transformers' outputs
        return getattr(self, key)


class GPT2:
    """A GPT-2 language model in NumPy. Holds weights and settings only: no per-call state,
    so one model can serve several threads at once (each call gets its own cache)."""

    def __init__(
        self, config: GPT2Config, weights: Weights, dtype: DTypeLike = "float32", mask_fill: str | float = "min"
    ) -> None:
        _check_dtype(dtype)
        tune_malloc()  # once per process: a forward's short-lived arrays stop page-faulting (heap.py)
        self.config = config
        self.weights = weights
        self.dtype = np.dtype(dtype)
        self.mask_fill = mask_fill
        self.fill = resolve_fill(mask_fill, self.dtype)  # the number forbidden cells get
        self.is_gradient_checkpointing = False  # loss_and_grads: keep each block's insides (see below)

    def gradient_checkpointing_enable(self) -> None:
        """loss_and_grads keeps only each block's input and recomputes its insides in the backward
        (transformers' name): each block's forward runs twice, and activation memory is 2 x C float32 per token
        and layer instead of 12 x C (the forward's qkv, z, the stream after attention and the MLP's
        input are then not kept: backward.block_forward)."""
        self.is_gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """loss_and_grads keeps each block's insides from the forward pass for the backward (the default)."""
        self.is_gradient_checkpointing = False

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        dtype: DTypeLike = "float32",
        mask_fill: str | float = "min",
        verify: bool = True,
        local_files_only: bool = False,
    ) -> GPT2:
        """Load gpt2 / gpt2-medium / gpt2-large / gpt2-xl / distilgpt2, any hub repo id, or a
        local folder with config.json + model.safetensors (see hub.py for where we look); or an
        llm.c model file (a .bin file, or any file with its magic number: llmc.py)."""
        from .hub import resolve_model_files
        from .llmc import is_model_file, read_model

        _check_dtype(dtype)
        resolve_fill(mask_fill, dtype)  # a bad fill fails before any file work
        path = Path(name_or_path)
        if path.is_file() and (path.suffix == ".bin" or is_model_file(path)):
            config, weights = read_model(path, dtype=str(np.dtype(dtype)))
            return cls(config, weights, dtype=dtype, mask_fill=mask_fill)
        files = resolve_model_files(name_or_path, verify=verify, local_files_only=local_files_only)
        config = GPT2Config.from_json_file(files["config.json"])
        return cls(
            config, load_weights(files["model.safetensors"], config, dtype=dtype), dtype=dtype, mask_fill=mask_fill
        )

    def __call__(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        labels: ArrayLike | None = None,
    ) -> GPT2Output:
        """Logits for every position of a batch (or, with logits_to_keep=N, its last N positions).

        input_ids [B, T] (or [T]: one sequence, and then the outputs drop the batch axis, as
        transformers does). position_ids default to `cumsum(attention_mask) - 1`, which is
        `arange(T)` when nothing is padded. NB: transformers' plain forward uses arange even
        for a left-padded batch (only its `generate` derives them from the mask); pass
        position_ids=np.arange(T) to reproduce it exactly.

        logits_to_keep, as in transformers: 0 (the default) keeps every position, N > 0 the last
        N (1 is all that generation needs: the output layer is then 1/T of the work and memory).
        Hidden states and attentions always cover every position.

        labels [B, T], as transformers takes them: the token expected at each position (shifted
        inside: labels=input_ids is next-token prediction), -100 not counted; .loss is then the
        mean -log p over the counted labels (a label predicted from a pad is not counted:
        gpt2np/labels.py says why; labels.labels_from_mask makes the labels of a padded batch).
        """
        _check_logits_to_keep(logits_to_keep)
        ids, mask, positions, one_sequence = self._check_inputs(input_ids, attention_mask, position_ids)
        if labels is not None:
            if logits_to_keep:
                raise InputError("labels= needs every position's logits; leave logits_to_keep at 0 to get a loss")
            targets, keep = counted(labels_or_default(labels, ids, mask, self.config.vocab_size), mask)
        out = self.forward(
            ids,
            mask,
            positions,
            logits_to_keep=logits_to_keep,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        if labels is not None:
            out.loss = cross_entropy(out.logits[:, :-1], targets, keep)  # backward.cross_entropy: float64 sums
        if one_sequence:
            out.logits = out.logits[0]
            out.hidden_states = out.hidden_states and tuple(h[0] for h in out.hidden_states)
            out.attentions = out.attentions and tuple(a[0] for a in out.attentions)
        return out

    def _check_inputs(
        self, input_ids: ArrayLike, attention_mask: ArrayLike | None, position_ids: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """-> [B, T] ids, mask, positions, and whether the caller gave one 1-D sequence."""
        ids, one_sequence = check_input_ids(input_ids, self.config.vocab_size)
        check_length(ids.shape[1], self.config.n_positions, "the input")
        mask = check_attention_mask(attention_mask, ids.shape)
        if position_ids is None:
            positions = position_ids_from_mask(mask)
        else:
            positions = check_position_ids(position_ids, ids.shape, self.config.n_positions)
        return ids, mask, positions, one_sequence

    def activation_names(self) -> list[str]:
        """The names run_with_cache and run_with_hooks know, in forward order (see hooks.py)."""
        return activation_names(self.config.n_layer)

    def run_with_cache(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        names_filter: Where | None = None,
        labels: ArrayLike | None = None,
        incl_bwd: bool = False,
    ) -> tuple[np.ndarray, ActivationCache]:
        """-> (logits, cache): cache[name] is the activation at that point (hooks.py lists them),
        a copy nothing later overwrites. names_filter: None (every point of activation_names()),
        a name, a list of names (the on-request hook_scale points too), or a predicate name ->
        bool. For a 1-D input, logits and cache drop the batch axis. The cache is a dict that also
        answers TransformerLens's cache["pattern", 0], accumulated_resid, ... (activation_cache.py).

        incl_bwd=True: the cache also holds, under `<name>_grad` (TransformerLens's convention), the
        gradient of the loss at each recorded point (a hook_scale point too, when named), in the
        order backpropagation reaches them; the loss is that of loss_and_grads with these labels
        (None: next-token prediction on the inputs, pads not counted)."""
        names = self.activation_names()
        record = names if names_filter is None else select(names_filter, names, scale_names(self.config.n_layer))
        hooks = Hooks(names, record=record, dtype=self.dtype)
        ids, mask, positions, one_sequence = self._check_inputs(input_ids, attention_mask, position_ids)
        logits = self.forward(ids, mask, positions, hook=hooks).logits
        order = hook_names(self.config.n_layer)
        activations = {name: hooks.cache[name] for name in order if name in hooks.cache}  # forward order
        if incl_bwd:
            grad_hooks = Hooks(names, record=record, dtype=self.dtype)  # the scales' gradients: backward.norm_backward
            self._backward_with(grad_hooks, ids, mask, positions, labels)
            activations |= {f"{name}_grad": g for name, g in grad_hooks.cache.items()}  # from the loss back
        elif labels is not None:
            raise InputError("labels= is for the gradients: pass incl_bwd=True with it (or leave labels out)")
        cache = ActivationCache(activations, self.config.n_layer, self.config.layer_norm_epsilon)
        if one_sequence:
            return logits[0], cache.remove_batch_dim()
        return logits, cache

    def run_with_hooks(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        fwd_hooks: Iterable[tuple[Where, HookFn]] = (),
        bwd_hooks: Iterable[tuple[Where, HookFn]] = (),
        labels: ArrayLike | None = None,
    ) -> np.ndarray:
        """-> logits, with fwd_hooks = [(name or predicate, fn), ...] applied: fn(activation, hook)
        sees each chosen point in forward order and may return a replacement of the same shape
        (ablation, patching) or None to leave it (hooks.py says what it may keep). `hook` is the
        point's name, a str with TransformerLens's hook.name. For a 1-D input, fn sees each point
        without the batch axis, as run_with_cache's cache holds it.

        bwd_hooks = [(name or predicate, fn), ...]: after the forward pass, the backward pass of the
        loss (loss_and_grads's, with these labels; None: next-token prediction) runs, and fn(grad,
        hook) sees the gradient at each chosen point from the loss back, and may return a
        replacement (what is upstream of the point then gets the replaced gradient), as
        TransformerLens's backward hooks; the hook_scale points too.

        Both in one call: the backward runs through the hooked forward, as autograd runs through
        TransformerLens's (hooks.Replay): the loss is the hooked model's, a bwd hook sees the
        gradient at the value its point went on with, and none flows back through what a forward
        hook replaced (a returned array: none at all; cells changed in place: none from those
        cells). A returned array computed from the activation (`a * 2`) is a constant here,
        where autograd would differentiate it: change `a` in place instead. Not with a forward
        hook that changes the logits (the loss is computed from the model's own logits, position by position)."""
        ids, mask, positions, one_sequence = self._check_inputs(input_ids, attention_mask, position_ids)
        bwd_hooks, fwd_hooks = list(bwd_hooks), list(fwd_hooks)
        on_request = scale_names(self.config.n_layer)
        hooks = Hooks(
            self.activation_names(),
            fwd_hooks=fwd_hooks,
            dtype=self.dtype,
            on_request=on_request,
            one_sequence=one_sequence,
            keep_replacements=bool(bwd_hooks),
        )
        logits = self.forward(ids, mask, positions, hook=hooks).logits
        if bwd_hooks and "logits" in (hooks.replaced or {}):
            raise InputError(
                "a forward hook that changes 'logits' together with bwd_hooks is not supported: the backward computes "
                "the loss from the model's own logits; hook ln_final.hook_normalized instead, or run them in two calls"
            )
        if bwd_hooks:
            names = self.activation_names()
            backward_hooks = Hooks(
                names, fwd_hooks=bwd_hooks, dtype=self.dtype, on_request=on_request, one_sequence=one_sequence
            )
            replay = Replay(hooks.replaced or {})
            self._backward_with(
                CutAtReplacements(backward_hooks, replay) if replay.kept else backward_hooks,
                ids,
                mask,
                positions,
                labels,
                replay,
            )
        elif labels is not None:
            raise InputError("labels= is for bwd_hooks: pass bwd_hooks with it (or leave labels out)")
        return logits[0] if one_sequence else logits

    # --- the forward pass: plain.forward, fast (tests/test_plain.py holds them equal) ----------

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        hook: Hooks = NO_HOOKS,
    ) -> GPT2Output:
        """The forward pass on checked inputs (plain.forward, fast; tests/test_plain.py).

        input_ids, position_ids: [B, T] the new tokens (the whole prompt, or one token per row in
        a decode step); attention_mask: [B, past + T], the cached tokens' columns first. Each
        `hook(name, x)` is x itself unless run_with_cache / run_with_hooks asked for that point."""
        # An overflow shows as inf or NaN in the logits, which the check below turns into our own
        # error naming where it began; NumPy's warnings on the way would only be noise before it.
        with np.errstate(over="ignore", invalid="ignore"):
            x, hidden, attentions = self.transformer(
                input_ids,
                attention_mask,
                position_ids,
                cache,
                output_hidden_states,
                output_attentions,
                hook,
                logits_to_keep,
            )  # [B, T, C] after ln_f ([B, N, C] with logits_to_keep=N and no hook: see transformer)
            if logits_to_keep:
                x = x[:, -logits_to_keep:]  # [B, N, C] (already so, unless hooks or all states were asked for)
            # a score for every token of the vocabulary: x . each token's embedding (tied)
            logits = hook("logits", lm_head(x, self.weights.lm_head))  # [B, T or N, C] -> [B, T or N, V]
        if not all_finite(logits):  # a NaN anywhere upstream reaches the logits (0 * NaN = NaN)
            raise self.non_finite_error(input_ids, attention_mask, position_ids, cache, hook)
        return GPT2Output(logits, hidden, attentions)

    def transformer(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        hook: Hooks = NO_HOOKS,
        keep: int = 0,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
        """Everything before the output layer (transformers' GPT2Model): the final hidden states
        [B, T, C] after ln_f, and the hidden states and attention weights when asked for.

        keep=N > 0: only the last N positions' final states are wanted ([B, N, C] out), as for
        logits_to_keep. The last block's outputs elsewhere would never be read, so its queries,
        MLP and ln_f run on those N positions only (1/n_layer of a long prefill saved); its keys
        and values still cover every position. Not when all positions' states, weights or any
        hook are asked for.
        """
        if output_hidden_states or output_attentions or hook is not NO_HOOKS:
            keep = 0
        mask = build_attention_mask(attention_mask, input_ids.shape[1], self.fill, self.dtype)  # [B, 1, T, past + T]
        x = self.embed(input_ids, position_ids, hook)  # [B, T, C] the residual stream (float64)
        hidden: list[np.ndarray] | None = [] if output_hidden_states else None
        attentions: list[np.ndarray] | None = [] if output_attentions else None
        for i in range(self.config.n_layer):
            if hidden is not None:
                hidden.append(x.astype(self.dtype))  # the embeddings, then each block's output
            last = i == self.config.n_layer - 1
            x, probs = self.block(i, x, mask, cache, hook, output_attentions, keep if last else 0)  # [B, T, C]
            if attentions is not None and probs is not None:
                attentions.append(probs)  # [B, H, T, past + T]
        x = hook("ln_final.hook_normalized", self.norm("ln_final", x, self.weights.ln_f, hook))  # [B, T, C] self.dtype
        if hidden is not None:
            hidden.append(x)  # transformers' last hidden state is after ln_f
        if cache is not None:
            cache.advance(input_ids.shape[1])  # every layer has stored this step's keys and values
        return x, None if hidden is None else tuple(hidden), None if attentions is None else tuple(attentions)

    def embed(self, input_ids: np.ndarray, position_ids: np.ndarray, hook: Hooks = NO_HOOKS) -> np.ndarray:
        """[B, T] ids and positions -> [B, T, C]: what each token is, plus where it stands. This
        starts the residual stream, which every block reads and adds to. It is kept in float64
        whatever the model's dtype: GPT-2 holds a few of its dimensions in the hundreds and adds
        small updates to them 2 x n_layer times, and in float32 each add would round at the large
        values' ulp. LayerNorm reads it in float64 anyway, so this costs two [B, T, C] float64 adds
        per block; the layers' inputs and outputs stay in self.dtype. (plain.forward's first line.)"""
        token = hook("hook_embed", self.weights.wte[input_ids])  # [B, T, C]
        position = hook("hook_pos_embed", self.weights.wpe[position_ids])  # [B, T, C]
        return np.add(token, position, dtype=np.float64)  # [B, T, C] float64

    def block(
        self,
        i: int,
        x: np.ndarray,
        mask: AttentionMask,
        cache: KVCache | None = None,
        hook: Hooks = NO_HOOKS,
        need_weights: bool = False,
        keep: int = 0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Block i, pre-LayerNorm: x + attention(ln_1(x)), then x + mlp(ln_2(x)) (plain.block;
        tests/test_plain.py). x [B, T, C] is the float64 residual stream, added to in place.
        -> the new stream, and the attention weights [B, H, T, past + T] when need_weights.
        keep=N: the block's output at the last N positions only ([B, N, C]; see transformer)."""
        b, at = self.weights.h[i], f"blocks.{i}."
        x = hook(at + "hook_resid_pre", x)  # [B, T, C]
        h = hook(at + "ln1.hook_normalized", self.norm(at + "ln1", x, b.ln_1, hook))  # [B, T, C] in self.dtype
        # the only sub-layer that mixes tokens; with keep=N, N queries over all T keys: [B, N, C]
        a, probs = self_attention(
            h, b.attn, mask, self.config.n_head, self.scale(i), cache, i, need_weights, hook, keep
        )
        if keep:
            x = x[:, -keep:]  # [B, N, C]: the only positions read from here on
        x += hook(at + "hook_attn_out", a)  # [B, T, C] tokens looked at each other
        x = hook(at + "hook_resid_mid", x)
        h = hook(at + "ln2.hook_normalized", self.norm(at + "ln2", x, b.ln_2, hook))  # [B, T, C]
        x += hook(at + "hook_mlp_out", mlp(h, b.mlp, hook, i))  # [B, T, C] each token thought alone
        return hook(at + "hook_resid_post", x), probs

    def norm(self, at: str, x: np.ndarray, ln: LayerNorm, hook: Hooks = NO_HOOKS) -> np.ndarray:
        """LayerNorm `at` ("blocks.3.ln1", "ln_final") of the float64 stream x: [B, T, C] -> [B, T, C]
        in self.dtype. Its point at + ".hook_scale", sqrt(var + eps) [B, T, 1], is computed only
        when asked for; a hook that replaces it makes the LayerNorm divide by the replacement."""
        eps = self.config.layer_norm_epsilon
        if not hook.wants(at + ".hook_scale"):  # the plain pass: one set and one dict lookup
            return layer_norm(x, ln, eps, self.dtype)
        scale = hook(at + ".hook_scale", layer_norm_scale(x, eps))  # [B, T, 1] float64
        return layer_norm(x, ln, eps, self.dtype, scale=scale)

    def scale(self, layer: int) -> float:
        """What attention scores are multiplied by in block `layer` (plain.attention_scale)."""
        scale = 1.0 / math.sqrt(self.config.head_dim) if self.config.scale_attn_weights else 1.0
        if self.config.scale_attn_by_inverse_layer_idx:
            scale /= layer + 1
        return scale

    def non_finite_error(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: KVCache | None = None,
        hook: Hooks = NO_HOOKS,
    ) -> ModelError:
        """The error for a forward pass whose output came out NaN or inf, naming where it began.

        The weights are checked finite at load and the inputs are token ids, so either a value
        overflowed the dtype (float32 tops out at 3.4e38: finite weights can still be too large)
        or a hook wrote NaN or inf. To say which point, the pass runs again with every point
        watched (the caller's hooks included), and the first one holding a non-finite value is
        named. Only a failed pass pays for this; a good one pays for one min and one max of its
        logits."""

        def first_non_finite(a: np.ndarray, name: str) -> None:
            bad = non_finite_cells(a, name)
            if bad.any():
                raise ModelError(describe_non_finite(a, bad, name, attention_mask, self.dtype, hooked=name in hook.fns))

        if cache is not None:
            cache.length -= input_ids.shape[1]  # the same step again: back to the cache it started from
        try:
            self.forward(
                input_ids,
                attention_mask,
                position_ids,
                cache,
                hook=hook.watched(self.activation_names(), first_non_finite),
            )
        except ModelError as e:
            return e
        return ModelError(  # every point was finite the second time: nothing to point at
            "the logits came out NaN or inf, but every point was finite when the pass was run again "
            "(a hook that behaves differently on a second call?)"
        )

    def generate(self, input_ids: ArrayLike, attention_mask: ArrayLike | None = None, **kwargs: Any) -> Any:
        """Greedy, sampled or beam-search continuation of a (left-padded) batch: the ids, or a
        GenerateOutput with return_dict_in_generate=True; see generation.generate."""
        from .generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    def compute_transition_scores(
        self, sequences: ArrayLike, scores: Any, beam_indices: ArrayLike | None = None, normalize_logits: bool = False
    ) -> np.ndarray:
        """Each generated token's score (its log-prob with normalize_logits=True, or with beams), as
        transformers' method of that name; see generation.compute_transition_scores."""
        from .generation import compute_transition_scores

        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits)

    @property
    def num_parameters(self) -> int:
        return sum(a.size for a in self.weights.arrays())

    def _backward_with(
        self,
        hooks: Hooks,
        ids: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray,
        labels: ArrayLike | None,
        fwd: Hooks = NO_HOOKS,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """backward.gradients on checked inputs with hooks(name, grad) at every activation point;
        fwd: the forward hooks' replacements to replay (hooks.Replay)."""
        from .backward import gradients, placed_targets

        targets, keep = placed_targets(labels, ids, mask, self.config.vocab_size)
        return gradients(self, ids, mask, positions, targets, keep, hooks, fwd, self.is_gradient_checkpointing)

    def loss_and_grads(
        self,
        input_ids: ArrayLike,
        labels: ArrayLike | None = None,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """-> (loss, grads): the loss of `self(input_ids, attention_mask, labels=labels)` and its
        gradient for every parameter, keyed by transformers' GPT2LMHeadModel.named_parameters()
        names (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...; the tied output
        layer's gradient is part of wte's), arrays in the model's dtype. labels=None: the inputs
        themselves, pads and each row's first real token not counted (labels.labels_from_mask).
        plain_backward.loss_and_grads, fast: see backward.py (tests/test_backward.py). Memory: the
        activations are kept from the forward pass, as torch does, unless gradient_checkpointing_enable()."""
        from .backward import loss_and_grads

        return loss_and_grads(self, input_ids, labels, attention_mask, position_ids)

    def score(
        self,
        inputs: ArrayLike | str | list[str],
        attention_mask: ArrayLike | None = None,
        tokenizer: Tokenizer | None = None,
        stride: int | None = None,
    ) -> Scores:
        """Per-token log-probs, log-likelihood and perplexity of ids (or texts, with tokenizer=); see
        scoring.score. stride=N scores texts longer than the context with sliding windows."""
        from .scoring import score

        return score(self, inputs, attention_mask=attention_mask, tokenizer=tokenizer, stride=stride)
