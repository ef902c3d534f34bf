"""HookedTransformer: TransformerLens's surface on a gpt2np GPT-2, with NumPy arrays.

Interpretability code written for TransformerLens 3 (`transformer_lens.HookedTransformer`,
3.x; TransformerLens 4 replaced it by TransformerBridge, which this does not follow) runs here
with its import line and the line that builds the model changed:

    from gpt2np.hooked_transformer import HookedTransformer
    model = HookedTransformer.from_pretrained("gpt2")       # TL: HookedTransformer.from_pretrained("gpt2")
    tokens = model.to_tokens("After John and Mary went to the store, Mary gave a bottle of milk to")
    logits, cache = model.run_with_cache(tokens)            # cache["pattern", 0], cache.decompose_resid(...)
    loss = model(tokens, return_type="loss")

What it follows, and where it stands apart (docs/cross-checking.md, section 6):
- the weights are never processed: it is TransformerLens's `from_pretrained_no_processing`
  (no LayerNorm folding, no centring); asking for processing is refused, not ignored.
- TransformerLens 3's conventions where gpt2np's core has its own: `hook_normalized` is the
  LayerNorm's output *before* its gain and bias ((x - mean) / scale; GPT2.run_with_cache records
  it after them, as transformers computes it); masked `hook_attn_scores` cells hold -inf (this
  view runs the model with mask_fill="-inf"; gpt2np's empty-row rule keeps real tokens exact).
- `to_tokens` prepends BOS (<|endoftext|>) unless prepend_bos=False and pads on the right, as
  TransformerLens does for GPT-2; `generate` samples by default (TL's do_sample=True).
- activations, weights and results are NumPy arrays: a hook gets and returns np.ndarray. The
  idioms of torch code that change: `.detach()` / `.cpu()` (drop them), `torch.zeros_like(x)`
  (`np.zeros_like(x)`), `x.gather(-1, idx)` (`np.take_along_axis(x, idx, -1)`).
- `blocks.{i}.attn.hook_result` (each head's output, [B, T, H, C]) is computed from hook_z and
  W_O when the cache is asked for it (names_filter, cfg.use_attn_result, stack_head_results);
  it is not a point a hook can change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .activation_cache import ActivationCache, get_act_name
from .errors import InputError
from .factored_matrix import FactoredMatrix
from .hooks import HookPoint, Hooks, hook_names, scale_names, select
from .layers import log_softmax
from .model import GPT2
from .tokenizer import Tokenizer

HookFn = Callable[[np.ndarray, HookPoint], Any]
PROCESSING = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)
LN_INPUT = {"ln1": "hook_resid_pre", "ln2": "hook_resid_mid"}  # the stream each block's LayerNorm reads
# TransformerLens 3's two points around the output layer, and gpt2np's points that hold them
UNEMBED = {"unembed.hook_in": "ln_final.hook_normalized", "unembed.hook_out": "logits"}


# `from gpt2np.hooked_transformer import HookedTransformer, utils`: what TransformerLens code takes from its utils
utils = SimpleNamespace(get_act_name=get_act_name, to_numpy=np.asarray)


@dataclass
class HookedTransformerConfig:
    """TransformerLens's cfg names for the model's shape."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    eps: float
    dtype: str
    act_fn: str = "gelu_new"  # GPT-2's tanh GELU
    normalization_type: str = "LN"
    positional_embedding_type: str = "standard"
    original_architecture: str = "GPT2LMHeadModel"
    default_prepend_bos: bool = True
    tokenizer_prepends_bos: bool = False
    attn_only: bool = False
    use_attn_result: bool = False
    device: str = "cpu"
    model_name: str = ""

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab


class _Stop(Exception):
    """Raised by the hook that ends a forward pass at stop_at_layer."""

    def __init__(self, residual: np.ndarray) -> None:
        self.residual = residual


# --- the weights, in TransformerLens's layout (views of gpt2np's, stacked where TL stacks) --------


class _LayerNormView:
    def __init__(self, ln: Any) -> None:
        self.w, self.b = ln.weight, ln.bias  # [C] gain and bias


class _AttentionView:
    """One block's attention weights as TransformerLens holds them: per head, [H, C, D] and [H, D, C]."""

    def __init__(self, attn: Any, n_heads: int) -> None:
        C = attn.c_attn.weight.shape[0]
        D = C // n_heads
        # c_attn is [C, 3C]: columns q | k | v, each C = H heads of D side by side ("m (i h) -> i m h")
        w = attn.c_attn.weight.reshape(C, 3, n_heads, D).transpose(1, 2, 0, 3)  # [3, H, C, D]
        b = attn.c_attn.bias.reshape(3, n_heads, D)  # [3, H, D]
        self.W_Q, self.W_K, self.W_V = w  # [H, C, D] each
        self.b_Q, self.b_K, self.b_V = b  # [H, D] each
        self.W_O = attn.c_proj.weight.reshape(n_heads, D, C)  # [H, D, C]: rows of c_proj, head by head
        self.b_O = attn.c_proj.bias  # [C]

    @property
    def QK(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_Q, self.W_K.swapaxes(-1, -2))  # [H, C, C] of rank D

    @property
    def OV(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_V, self.W_O)  # [H, C, C] of rank D


class _MLPView:
    def __init__(self, m: Any) -> None:
        self.W_in, self.b_in = m.c_fc.weight, m.c_fc.bias  # [C, F], [F]
        self.W_out, self.b_out = m.c_proj.weight, m.c_proj.bias  # [F, C], [C]


class _BlockView:
    def __init__(self, block: Any, n_heads: int) -> None:
        self.attn = _AttentionView(block.attn, n_heads)
        self.mlp = _MLPView(block.mlp)
        self.ln1, self.ln2 = _LayerNormView(block.ln_1), _LayerNormView(block.ln_2)


class _HookPointHandle:
    """model.hook_dict[name]: TransformerLens's HookPoint, for add_hook / remove_hooks."""

    def __init__(self, owner: HookedTransformer, name: str) -> None:
        self.owner, self.name = owner, name

    def add_hook(self, fn: HookFn, dir: str = "fwd") -> None:
        self.owner.add_hook(self.name, fn, dir)

    def remove_hooks(self, dir: str = "fwd") -> None:
        self.owner._hooks = [(n, f) for n, f in self.owner._hooks if n != self.name]

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


class HookedTransformer:
    """A GPT2 (and its tokenizer) seen through TransformerLens 3's HookedTransformer API. See the
    module's docstring for what differs; the numbers are gpt2np's forward pass."""

    def __init__(self, model: GPT2, tokenizer: Tokenizer | None = None, model_name: str = "") -> None:
        # the same weights, with -inf in masked scores (TransformerLens's hook_attn_scores)
        self.model = GPT2(model.config, model.weights, dtype=model.dtype, mask_fill="-inf")
        c = model.config
        self.cfg = HookedTransformerConfig(
            n_layers=c.n_layer, n_heads=c.n_head, d_model=c.n_embd, d_head=c.n_embd // c.n_head,
            d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
            eps=c.layer_norm_epsilon, dtype=str(model.dtype), model_name=model_name,
        )  # fmt: skip
        self.tokenizer = tokenizer
        self.blocks = [_BlockView(b, c.n_head) for b in model.weights.h]
        self.ln_final = _LayerNormView(model.weights.ln_f)
        self._hooks: list[tuple[Any, HookFn]] = []  # added with add_hook, kept until reset_hooks

    @classmethod
    def from_pretrained(
        cls, model_name: str, dtype: str = "float32", tokenizer: Tokenizer | None = None, **kwargs: Any
    ) -> HookedTransformer:
        """gpt2np's GPT2.from_pretrained (a name or a folder) with its tokenizer; never processed:
        TransformerLens's from_pretrained_no_processing. Processing flags set true are refused."""
        asked = [k for k in PROCESSING if kwargs.pop(k, False)]
        if asked:
            raise InputError(
                f"{', '.join(asked)}: gpt2np never processes the weights (TransformerLens's "
                "from_pretrained_no_processing); drop these arguments"
            )
        unknown = set(kwargs) - {"device", "move_to_device", "default_prepend_bos", "n_devices"}
        if unknown:
            raise InputError(f"from_pretrained does not take {', '.join(sorted(unknown))}")
        model = GPT2.from_pretrained(model_name, dtype=dtype)
        view = cls(model, tokenizer or Tokenizer.from_pretrained(model_name), model_name=str(model_name))
        view.cfg.default_prepend_bos = kwargs.get("default_prepend_bos", True)
        return view

    from_pretrained_no_processing = from_pretrained

    # --- weights -------------------------------------------------------------------------------

    @property
    def W_E(self) -> np.ndarray:
        return self.model.weights.wte  # [V, C]

    @property
    def W_pos(self) -> np.ndarray:
        return self.model.weights.wpe  # [n_ctx, C]

    @property
    def W_U(self) -> np.ndarray:
        return self.model.weights.lm_head.T  # [C, V] (GPT-2 ties it to W_E)

    @property
    def b_U(self) -> np.ndarray:
        return np.zeros(self.cfg.d_vocab, dtype=self.model.dtype)  # GPT-2's output layer has no bias

    def _stacked(self, part: str, name: str) -> np.ndarray:
        return np.stack([getattr(getattr(b, part), name) for b in self.blocks])

    W_Q = property(lambda self: self._stacked("attn", "W_Q"))  # [L, H, C, D]
    W_K = property(lambda self: self._stacked("attn", "W_K"))
    W_V = property(lambda self: self._stacked("attn", "W_V"))
    W_O = property(lambda self: self._stacked("attn", "W_O"))  # [L, H, D, C]
    b_Q = property(lambda self: self._stacked("attn", "b_Q"))  # [L, H, D]
    b_K = property(lambda self: self._stacked("attn", "b_K"))
    b_V = property(lambda self: self._stacked("attn", "b_V"))
    b_O = property(lambda self: self._stacked("attn", "b_O"))  # [L, C]
    W_in = property(lambda self: self._stacked("mlp", "W_in"))  # [L, C, F]
    b_in = property(lambda self: self._stacked("mlp", "b_in"))
    W_out = property(lambda self: self._stacked("mlp", "W_out"))  # [L, F, C]
    b_out = property(lambda self: self._stacked("mlp", "b_out"))

    @property
    def QK(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_Q, self.W_K.swapaxes(-1, -2))  # [L, H, C, C]

    @property
    def OV(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_V, self.W_O)  # [L, H, C, C]

    def tokens_to_residual_directions(self, tokens: Any) -> np.ndarray:
        """The unembedding direction of each token: W_U[:, token], [..., C]."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = np.asarray(tokens)
        return np.moveaxis(self.W_U[:, ids], 0, -1)  # [*ids.shape, C]

    # --- tokens --------------------------------------------------------------------------------

    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer: pass token ids, or build it with a Tokenizer")
        return self.tokenizer

    def to_tokens(
        self, input: str | list[str], prepend_bos: bool | None = None, padding_side: str | None = None,
        move_to_device: bool = True, truncate: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """Text -> [B, T] int64 ids; BOS (<|endoftext|>) first unless prepend_bos=False; a batch of
        different lengths padded with eos on the right (padding_side="left" for the left)."""
        tok = self._tok()
        texts = [input] if isinstance(input, str) else list(input)
        if not all(isinstance(t, str) for t in texts):
            raise InputError(f"to_tokens takes a string or a list of strings, got {type(input).__name__}")
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        rows = [([tok.eos_token_id] if bos else []) + list(tok.encode(t)) for t in texts]
        if truncate:
            rows = [r[: self.cfg.n_ctx] for r in rows]
        width = max(len(r) for r in rows)
        pad = [tok.eos_token_id]
        side = padding_side or "right"
        if side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        padded = [pad * (width - len(r)) + r if side == "left" else r + pad * (width - len(r)) for r in rows]
        return np.array(padded, dtype=np.int64)

    def to_string(self, tokens: ArrayLike) -> str | list[str]:
        ids = np.asarray(tokens)
        if ids.ndim == 2:
            return [self._tok().decode(row) for row in ids]
        return self._tok().decode(np.atleast_1d(ids))

    def to_str_tokens(self, input: Any, prepend_bos: bool | None = None, padding_side: str | None = None) -> Any:
        if isinstance(input, list) and not all(isinstance(x, (int, np.integer)) for x in input):
            return [self.to_str_tokens(x, prepend_bos, padding_side) for x in input]
        ids = self.to_tokens(input, prepend_bos, padding_side)[0] if isinstance(input, str) else np.asarray(input)
        ids = np.atleast_1d(ids.squeeze())
        if ids.ndim != 1:
            raise InputError(f"to_str_tokens takes one sequence of tokens ([T] or [1, T]), got shape {ids.shape}")
        return [self._tok().decode([int(t)]) for t in ids]

    def to_single_token(self, string: str) -> int:
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if len(ids) != 1:
            raise InputError(f"{string!r} is {len(ids)} tokens, not one: {self.to_str_tokens(ids)}")
        return int(ids[0])

    def get_token_position(
        self, single_token: str | int, input: Any, mode: str = "first", prepend_bos: bool | None = None,
        padding_side: str | None = None,
    ) -> int:  # fmt: skip
        ids = self.to_tokens(input, prepend_bos, padding_side) if isinstance(input, str) else np.asarray(input)
        ids = np.atleast_2d(ids)
        if ids.shape[0] != 1:
            raise InputError(f"get_token_position takes one sequence, got {ids.shape[0]} rows")
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        found = np.flatnonzero(ids[0] == token)
        if not found.size:
            raise InputError(f"token {token} ({self._tok().decode([token])!r}) is not in the input")
        if mode not in ("first", "last"):
            raise InputError(f"mode must be 'first' or 'last', got {mode!r}")
        return int(found[0] if mode == "first" else found[-1])

    def _as_tokens(self, input: Any, prepend_bos: bool | None, padding_side: str | None) -> np.ndarray:
        if isinstance(input, str) or (isinstance(input, list) and input and isinstance(input[0], str)):
            return self.to_tokens(input, prepend_bos, padding_side)
        ids = np.asarray(input)
        return ids[None] if ids.ndim == 1 else ids

    # --- hooks -----------------------------------------------------------------------------------

    @property
    def hook_dict(self) -> dict[str, _HookPointHandle]:
        return {name: _HookPointHandle(self, name) for name in self.hook_names()}

    def add_hook(self, name: Any, hook: HookFn, dir: str = "fwd", is_permanent: bool = False) -> None:
        if dir != "fwd":
            raise InputError("only forward hooks (dir='fwd') are offered")
        self._hooks.append((name, hook))

    def reset_hooks(self, including_permanent: bool = False) -> None:
        self._hooks = []

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[Any, HookFn]] = (), reset_hooks_end: bool = True) -> Iterator[Any]:
        before = list(self._hooks)
        self._hooks.extend(fwd_hooks)
        try:
            yield self
        finally:
            if reset_hooks_end:
                self._hooks = before

    # --- the forward pass ---------------------------------------------------------------------------

    def __call__(
        self, input: Any, return_type: str | None = "logits", loss_per_token: bool = False,
        prepend_bos: bool | None = None, padding_side: str | None = None, attention_mask: ArrayLike | None = None,
        stop_at_layer: int | None = None,
    ) -> Any:  # fmt: skip
        tokens = self._as_tokens(input, prepend_bos, padding_side)
        logits, _ = self._run(tokens, attention_mask, stop_at_layer, self._hooks, record=())
        return self._returned(logits, tokens, return_type, loss_per_token, stop_at_layer)

    forward = __call__

    def run_with_hooks(
        self, input: Any, fwd_hooks: Iterable[tuple[Any, HookFn]] = (), bwd_hooks: Iterable[Any] = (),
        reset_hooks_end: bool = True, clear_contexts: bool = False, return_type: str | None = "logits",
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        if list(bwd_hooks):
            raise InputError("bwd_hooks: gpt2np's HookedTransformer offers forward hooks only")
        with self.hooks(fwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(input, return_type=return_type, **kwargs)

    def run_with_cache(
        self, input: Any, names_filter: Any = None, remove_batch_dim: bool = False, return_type: str | None = "logits",
        loss_per_token: bool = False, prepend_bos: bool | None = None, padding_side: str | None = None,
        attention_mask: ArrayLike | None = None, stop_at_layer: int | None = None,
        fwd_hooks: Iterable[tuple[Any, HookFn]] = (),
    ) -> tuple[Any, ActivationCache]:  # fmt: skip
        """-> (what return_type asks for, cache). The cache holds TransformerLens 3's values (see the
        module's docstring) and answers its methods (decompose_resid, stack_head_results, ...)."""
        tokens = self._as_tokens(input, prepend_bos, padding_side)
        names = self.hook_names() + [f"blocks.{i}.attn.hook_result" for i in range(self.cfg.n_layers)]
        record = names if names_filter is None else select(names_filter, names)
        if names_filter is None and not self.cfg.use_attn_result:
            record = [n for n in record if not n.endswith("hook_result")]
        logits, cache = self._run(tokens, attention_mask, stop_at_layer, [*self._hooks, *fwd_hooks], record)
        out = self._returned(logits, tokens, return_type, loss_per_token, stop_at_layer)
        if remove_batch_dim:
            cache.remove_batch_dim()
        return out, cache

    def hook_names(self) -> list[str]:
        """Every point of this view, in TransformerLens 3's names and forward order."""
        return [n for n in hook_names(self.cfg.n_layers) if n != "logits"] + list(UNEMBED)

    def _run(
        self, tokens: np.ndarray, attention_mask: ArrayLike | None, stop_at_layer: int | None,
        fwd_hooks: list[tuple[Any, HookFn]], record: Iterable[str],
    ) -> tuple[np.ndarray, ActivationCache]:  # fmt: skip
        """One forward pass with TransformerLens's conventions laid over gpt2np's hooks."""
        L = self.cfg.n_layers
        points = self.hook_names()
        record = list(record)
        results = [n for n in record if n.endswith("attn.hook_result")]  # computed after the pass
        user: dict[str, list[HookFn]] = {}
        for where, fn in fwd_hooks:
            if not callable(fn):
                raise InputError(f"fwd_hooks must be (name or predicate, fn) pairs, got ({where!r}, {fn!r})")
            for name in select(where, points + [n.replace("hook_z", "hook_result") for n in points if "hook_z" in n]):
                if name.endswith("hook_result"):
                    raise InputError(f"{name} is computed after the pass from hook_z and W_O; hook hook_z instead")
                user.setdefault(name, []).append(fn)
        streams: dict[str, np.ndarray] = {}
        kept: dict[str, np.ndarray] = {}  # TL 3's hook_normalized values, recorded by the wrappers
        ours: list[tuple[Any, HookFn]] = []  # gpt2np's hook functions, in the order they run at a point
        for name in points:
            if name.endswith("hook_normalized"):  # TL 3: (x - mean) / scale, before gain and bias
                if name in user or name in record:
                    source = self._ln_input(name)
                    ours.append((source, self._capture(streams, source)))
                    ours.append(
                        (name, self._normalized(name, streams, source, user.get(name, []), kept, name in record))
                    )
            else:
                ours += [(UNEMBED.get(name, name), fn) for fn in user.get(name, [])]
        if stop_at_layer is not None:
            stop = stop_at_layer + L if stop_at_layer < 0 else stop_at_layer
            if not 0 <= stop <= L:
                raise InputError(f"stop_at_layer must be in -{L} .. {L}, got {stop_at_layer}")
            if stop < L:
                ours.append((f"blocks.{stop}.hook_resid_pre", self._stopper()))
        wanted = [UNEMBED.get(n, n) for n in record if not n.endswith(("hook_normalized", "hook_result"))]
        wanted += [f"blocks.{n.split('.')[1]}.attn.hook_z" for n in results]
        native = hook_names(L)
        hooks = Hooks(native, fwd_hooks=ours, record=wanted, dtype=self.model.dtype, on_request=scale_names(L))
        mask = np.ones(tokens.shape, dtype=np.int64) if attention_mask is None else attention_mask
        ids, mask, positions, _ = self.model._check_inputs(tokens, mask, None)
        try:
            logits = self.model.forward(ids, mask, positions, hook=hooks).logits
        except _Stop as stopped:
            logits = stopped.residual
        values = {view: hooks.cache[name] for view, name in UNEMBED.items() if view in record and name in hooks.cache}
        values |= {name: a for name, a in hooks.cache.items() if name in record}
        values |= kept
        for name in results:  # each head's output: z [B, T, H, D] through its rows of W_O [H, D, C]
            z = hooks.cache[name.replace("hook_result", "hook_z")]
            values[name] = np.einsum("bthd,hdc->bthc", z, self.blocks[int(name.split(".")[1])].attn.W_O).astype(z.dtype)
        order = [n for n in points if n in values] + results
        cache = ActivationCache({n: values[n] for n in order}, L, self.cfg.eps, model=self)
        return logits, cache

    def _ln_input(self, name: str) -> str:
        if name == "ln_final.hook_normalized":
            return f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"
        block, ln = name.split(".")[1], name.split(".")[2]
        return f"blocks.{block}.{LN_INPUT[ln]}"

    @staticmethod
    def _capture(streams: dict[str, np.ndarray], source: str) -> HookFn:
        def capture(x: np.ndarray, hook: HookPoint) -> None:
            streams[source] = x.copy()  # what the LayerNorm reads, after any hook on this point

        return capture

    def _normalized(
        self, name: str, streams: dict[str, np.ndarray], source: str, fns: list[HookFn], kept: dict[str, np.ndarray],
        record: bool,
    ) -> HookFn:  # fmt: skip
        ln = (
            self.ln_final
            if name.startswith("ln_final")
            else getattr(self.blocks[int(name.split(".")[1])], name.split(".")[2])
        )
        eps, dtype = self.cfg.eps, self.model.dtype

        def normalized(y: np.ndarray, hook: HookPoint) -> np.ndarray | None:
            x = streams[source].astype(np.float64)
            centred = x - x.mean(axis=-1, keepdims=True)
            n = (centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps)).astype(dtype)  # [B, T, C]
            before = n.copy()
            for fn in fns:
                out = fn(n, hook)
                n = n if out is None else np.asarray(out, dtype=dtype)
            if record:
                kept[name] = n.copy()
            if np.array_equal(n, before):
                return None  # only looked: gpt2np's own output (gain and bias applied in float64) stands
            return n * ln.w + ln.b  # a hook changed it: the LayerNorm goes on from the changed value

        return normalized

    @staticmethod
    def _stopper() -> HookFn:
        def stop(x: np.ndarray, hook: HookPoint) -> None:
            raise _Stop(x.copy())

        return stop

    def _returned(
        self, logits: np.ndarray, tokens: np.ndarray, return_type: str | None, per_token: bool, stop: int | None
    ) -> Any:
        if stop is not None and stop not in (self.cfg.n_layers,):
            return logits  # the residual stream where it stopped
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if return_type not in ("loss", "both"):
            raise InputError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        loss = self.loss_fn(logits, tokens, per_token=per_token)
        return loss if return_type == "loss" else (logits, loss)

    def loss_fn(
        self, logits: np.ndarray, tokens: np.ndarray, attention_mask: ArrayLike | None = None, per_token: bool = False
    ) -> Any:
        """TransformerLens's lm_cross_entropy_loss: -log p(token t+1 | up to t) at every position but
        the last ([B, T - 1] with per_token, else its mean; attention_mask: only real targets count)."""
        logits, tokens = np.asarray(logits), np.asarray(tokens)
        B, T, V = logits.shape
        logprobs = log_softmax(logits[:, :-1].reshape(-1, V)).reshape(B, T - 1, V)  # [B, T - 1, V]
        picked = np.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]  # [B, T - 1]
        if per_token:
            return -picked
        if attention_mask is not None:
            counted = np.asarray(attention_mask)[:, 1:].astype(bool)
            return -(picked[counted].astype(np.float64).sum() / counted.sum()).astype(logits.dtype)
        return -picked.astype(np.float64).mean().astype(logits.dtype)

    def generate(
        self, input: Any = "", max_new_tokens: int = 10, stop_at_eos: bool = True, eos_token_id: int | None = None,
        do_sample: bool = True, top_k: int | None = None, top_p: float | None = None, temperature: float = 1.0,
        prepend_bos: bool | None = None, padding_side: str | None = None, return_type: str | None = "input",
        verbose: bool = True, seed: int | None = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        """TransformerLens's generate: samples by default (do_sample=True; temperature 0 is greedy);
        a string in gives a string out (BOS dropped), tokens in give tokens out."""
        tokens = self._as_tokens(input, prepend_bos, padding_side)
        sample = do_sample and temperature > 0
        settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample}
        if sample:
            settings |= {"temperature": temperature, "top_k": top_k or 0, "top_p": 1.0 if top_p is None else top_p}
            settings["seed"] = seed
        if stop_at_eos:
            settings["eos_token_id"] = self._tok().eos_token_id if eos_token_id is None else eos_token_id
            settings["pad_token_id"] = settings["eos_token_id"]
        out = self.model.generate(tokens, **settings, **kwargs)
        if return_type == "str" or (return_type == "input" and isinstance(input, str)):
            texts = [self._tok().decode(row, skip_special_tokens=True) for row in out]
            return texts[0] if len(texts) == 1 else texts
        return out
