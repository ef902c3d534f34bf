"""Named points inside the forward pass: read them (run_with_cache) or change them (run_with_hooks).

The forward pass (model.py, attention.py) passes each intermediate through `hook(name, x)`,
which returns x untouched unless someone asked for that name. The names are TransformerLens's,
so interpretability users know them; what they hold is exactly transformers' GPT-2 (no weight
folding, no centring, LayerNorm outputs after gain and bias):

    hook_embed, hook_pos_embed            [B, T, C]     wte[input_ids], wpe[position_ids]
    blocks.{i}.hook_resid_pre             [B, T, C]     the residual stream entering block i
    blocks.{i}.ln1.hook_scale             [B, T, 1]     ln_1's sqrt(var + eps) per token (on request, see below)
    blocks.{i}.ln1.hook_normalized        [B, T, C]     ln_1's output
    blocks.{i}.attn.hook_q / hook_k / hook_v  [B, T, H, D]  c_attn's output, split into heads
    blocks.{i}.attn.hook_attn_scores      [B, H, T, Tk] q k^T * scale + the additive mask, before softmax
    blocks.{i}.attn.hook_pattern          [B, H, T, Tk] the softmax weights (a pad query with no key: 0)
    blocks.{i}.attn.hook_z                [B, T, H, D]  each head's weighted sum of values (c_proj's input)
    blocks.{i}.hook_attn_out              [B, T, C]     c_proj's output
    blocks.{i}.hook_resid_mid             [B, T, C]     after the attention's residual add
    blocks.{i}.ln2.hook_scale             [B, T, 1]     ln_2's sqrt(var + eps) (on request)
    blocks.{i}.ln2.hook_normalized        [B, T, C]     ln_2's output
    blocks.{i}.mlp.hook_pre / hook_post   [B, T, F]     c_fc's output; after GELU
    blocks.{i}.hook_mlp_out               [B, T, C]     the MLP's c_proj output
    blocks.{i}.hook_resid_post            [B, T, C]     the residual stream leaving block i
    ln_final.hook_scale                   [B, T, 1]     ln_f's sqrt(var + eps) (on request)
    ln_final.hook_normalized              [B, T, C]     ln_f's output
    logits                                [B, T, V]

The three kinds of hook_scale point are computed only when named (run_with_cache's
names_filter, a hook's name or list of names): the plain cache, a predicate and a trace leave
them out, and a hook on one that returns another scale makes that LayerNorm divide by it
(TransformerLens's "freeze the LayerNorm scale"). ActivationCache derives a missing one from the
cached LayerNorm input when asked (activation_cache.py). Their gradients too are computed only
when named (run_with_cache(incl_bwd=True), bwd_hooks: backward.norm_backward).

For the backward pass (run_with_cache(incl_bwd=True), run_with_hooks(bwd_hooks=)), the same
names carry the gradient of the loss at each point; Replay carries a run's forward-hook
replacements into it (run_with_hooks with fwd_hooks and bwd_hooks).

A hook function gets (activation, hook): `hook` is a HookPoint, the point's name as a str
that also answers TransformerLens's `hook.name` and `hook.layer()`. For a 1-D input (one
sequence) hooks see each point without the batch axis, as the cache holds it.

Two promises, because the forward pass works in place (`x += ...`, softmax and GELU overwrite
their input) to save memory:
- what a hook is handed, what it hands back and what the cache holds is its own copy: nothing
  the forward pass does later writes into it;
- a point nobody asked for costs one dictionary lookup, no copy.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .errors import InputError

BLOCK_POINTS = (  # one block's points, in the order the forward pass reaches them
    "hook_resid_pre", "ln1.hook_normalized",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
    "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
)  # fmt: skip
SCALE_POINTS = ("ln1.hook_scale", "ln2.hook_scale")  # a block's on-request points (and ln_final.hook_scale)
SHAPES = {  # the last part of a name -> its axes
    "hook_embed": "B T C",
    "hook_pos_embed": "B T C",
    "hook_resid_pre": "B T C",
    "hook_normalized": "B T C",
    "hook_scale": "B T 1",  # 1: TransformerLens keeps the axis, so that x / scale broadcasts
    "hook_q": "B T H D",
    "hook_k": "B T H D",
    "hook_v": "B T H D",
    "hook_z": "B T H D",
    "hook_attn_scores": "B H T Tk",
    "hook_pattern": "B H T Tk",
    "hook_attn_out": "B T C",
    "hook_resid_mid": "B T C",
    "hook_pre": "B T F",
    "hook_post": "B T F",
    "hook_mlp_out": "B T C",
    "hook_resid_post": "B T C",
    "logits": "B T V",
}

# How a hook chooses points: one name, several names, or a predicate name -> bool.
Where = str | Iterable[str] | Callable[[str], bool]


class HookPoint(str):
    """What a hook function gets as its second argument: the point's name, a str (so
    `fn(a, name)` works as it always did), which also answers TransformerLens's
    `hook.name` and `hook.layer()`, so `fn(a, hook)` written for TransformerLens runs too.

    >>> HookPoint("blocks.3.attn.hook_z").name, HookPoint("blocks.3.attn.hook_z").layer()
    ('blocks.3.attn.hook_z', 3)
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        return str(self)

    def layer(self) -> int:
        """The block the point is in, as TransformerLens's HookPoint.layer()."""
        parts = self.split(".")
        if parts[0] != "blocks":
            raise InputError(f"{self} is not inside a block, so it has no layer")
        return int(parts[1])


# A hook function fn(activation, hook): a replacement of the same shape, or None to keep it.
HookFn = Callable[[np.ndarray, HookPoint], ArrayLike | None]


def activation_names(n_layer: int) -> list[str]:
    """Every point of a model with n_layer blocks that the cache records by default, in forward
    order (the hook_scale points, computed on request only, are in hook_names)."""
    blocks = [f"blocks.{i}.{point}" for i in range(n_layer) for point in BLOCK_POINTS]
    return ["hook_embed", "hook_pos_embed", *blocks, "ln_final.hook_normalized", "logits"]


def scale_names(n_layer: int) -> list[str]:
    """The on-request points: each LayerNorm's sqrt(var + eps), [B, T, 1]."""
    return [f"blocks.{i}.{point}" for i in range(n_layer) for point in SCALE_POINTS] + ["ln_final.hook_scale"]


def hook_names(n_layer: int) -> list[str]:
    """Every point, the on-request ones included, in forward order (each scale just before its
    LayerNorm's output)."""
    names = []
    for name in activation_names(n_layer):
        if name.endswith("hook_normalized"):
            names.append(name.replace("hook_normalized", "hook_scale"))
        names.append(name)
    return names


def axes(name: str) -> list[str]:
    """'blocks.3.attn.hook_q' -> ['B', 'T', 'H', 'D']."""
    return SHAPES[name.rsplit(".", 1)[-1]].split()


def _unknown(name: object, names: Sequence[str]) -> InputError:
    if not isinstance(name, str):
        return InputError(f"a hook is chosen by a name (str) or a predicate name -> bool, got {name!r}")
    n_layer = sum(1 for n in names if n.endswith(".hook_resid_pre"))
    near = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    return InputError(
        f"{name!r} is not an activation point of this model{hint}. The points are hook_embed, hook_pos_embed, "
        f"blocks.{{i}}.{{{', '.join(BLOCK_POINTS)}}} for i in 0 .. {n_layer - 1}, ln_final.hook_normalized and logits, "
        "and on request blocks.{i}.ln1.hook_scale, blocks.{i}.ln2.hook_scale and ln_final.hook_scale "
        "(gpt2np.hooks.hook_names(n_layer) lists them)"
    )


def select(where: Where, names: Sequence[str], on_request: Sequence[str] = ()) -> list[str]:
    """The names a hook asks for: one name, a list of names, or a predicate name -> bool. A
    predicate chooses among `names`; a name may also be one of `on_request` (the scales)."""
    if callable(where):
        chosen = [n for n in names if where(n)]
        if not chosen:
            raise InputError(f"the predicate {where!r} matches no activation point; points look like {names[2]!r}")
        return chosen
    if not isinstance(where, (str, list, tuple, set, frozenset)):  # 5 or 3 would be a TypeError in list()
        raise _unknown(where, [*names, *on_request])
    wanted = [where] if isinstance(where, str) else list(where)
    for name in wanted:
        if name not in names and name not in on_request:
            raise _unknown(name, [*names, *on_request])
    return wanted


class Hooks:
    """What one call of the forward pass should record or change. `Hooks()` does nothing.

    hook(name, x) -> the array the forward pass goes on with: x itself when the name was not
    asked for; otherwise a copy goes into `cache` (if recorded), and each function fn(a, hook)
    gets its own copy `a` and may return a replacement of the same shape, or change `a` in place
    and return None. one_sequence: the caller gave one 1-D sequence, so the functions see each
    point without its batch axis of 1 ([T, C], not [1, T, C]), as the cache will hold it.
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        fwd_hooks: Iterable[tuple[Where, HookFn]] = (),
        record: Iterable[str] = (),
        dtype: DTypeLike | None = None,
        on_request: Sequence[str] = (),
        one_sequence: bool = False,
        keep_replacements: bool = False,
    ) -> None:
        self.cache: dict[str, np.ndarray] = {}
        # keep_replacements: what the functions changed, for a backward pass through this forward
        # (run_with_hooks with fwd_hooks and bwd_hooks): name -> (the value the pass went on with,
        # the cells whose gradient stops there). See Replay.
        self.replaced: dict[str, tuple[np.ndarray, np.ndarray]] | None = {} if keep_replacements else None
        self._returned = False  # did a function return a new array (not None, not its own argument)?
        # The dtype every point is shown in (the model's): the residual stream, which the forward
        # pass keeps in float64, is shown rounded to it, like every other point. None: as it is.
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.record = set(record)
        self.one_sequence = one_sequence
        self.fns: dict[str, list[HookFn]] = {}
        for pair in fwd_hooks:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
                raise InputError(f"fwd_hooks must be a list of (name or predicate, fn) pairs, got {pair!r}")
            for name in select(pair[0], names, on_request):
                self.fns.setdefault(name, []).append(pair[1])

    def watched(self, names: Sequence[str], fn: HookFn) -> Hooks:
        """These hooks, plus fn(activation, name) at every point of `names`, after the point's own
        functions (so fn sees what the forward pass goes on with). Records nothing. fn always sees
        the batch axis, even where the caller's own functions see one sequence without it."""
        watching = Hooks(dtype=self.dtype, one_sequence=self.one_sequence)
        if self.one_sequence:
            fn = _with_batch_axis(fn)
        watching.fns = {name: [*self.fns.get(name, []), fn] for name in names}
        return watching

    def wants(self, name: str) -> bool:
        return name in self.record or name in self.fns

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        fns = self.fns.get(name)
        if fns is not None:
            before = None if self.replaced is None else x.copy()
            self._returned = False
            for fn in fns:
                x = self._apply(fn, name, x)
            if before is not None and self.replaced is not None:
                # torch's rule: an array the function returned is a constant (no gradient flows back
                # through it: a patch, a cached value); cells it changed in place are constants, the
                # others pass their gradient on (ablating a head with a[..., h, :] = 0)
                cut = np.ones(x.shape, dtype=bool) if self._returned else (x != before)
                if cut.any():
                    self.replaced[name] = (x.copy(), cut)
        if name in self.record:
            self.cache[name] = self._shown(x)  # a copy: the forward pass may overwrite x in place later
        return x

    def _shown(self, x: np.ndarray) -> np.ndarray:
        """A copy of x in the dtype the points are shown in."""
        return x.astype(x.dtype if self.dtype is None else self.dtype)

    def _apply(self, fn: HookFn, name: str, x: np.ndarray) -> np.ndarray:
        shown = self._shown(x)
        given = shown.copy()  # the function's own: it may keep it, the forward pass won't touch it
        seen = given[0] if self.one_sequence else given  # [T, ...] a view of given for one 1-D sequence
        out = fn(seen, HookPoint(name))
        if out is None or out is seen:  # changed in place, or only looked: carry its changes back into x
            # only the cells it changed: the others keep x's own values (the float64 residual
            # stream must not be rounded to float32 by a hook that only looked)
            changed = given != shown
            x[changed] = given[changed]
            return x
        returned = type(out).__name__
        try:
            out = np.asarray(out)
        except ValueError:  # ragged lists
            out = np.asarray(out, dtype=object)
        if out.dtype.kind not in "biuf":
            raise InputError(
                f"the hook on {name!r} returned {returned} (dtype {out.dtype}); return an array of numbers, or None"
            )
        if out.shape != seen.shape:
            shown_axes = axes(name)[1:] if self.one_sequence else axes(name)  # one sequence: no B
            raise InputError(
                f"the hook on {name!r} returned shape {list(out.shape)}, but {name} has shape {list(seen.shape)} "
                f"[{', '.join(shown_axes)}]; return an array of the same shape (or None to keep the activation)"
            )
        if self.one_sequence:
            out = out[None]  # [T, ...] -> [1, T, ...]: the forward pass's own shape
        self._returned = True
        return np.array(out, dtype=x.dtype)  # a fresh copy in the model's dtype: the caller keeps theirs


class Replay(Hooks):
    """The forward hooks' replacements of one run (Hooks(keep_replacements=True).replaced), for the
    backward pass through that run, as torch's autograd sees a TransformerLens forward hook:

    - called where the backward recomputes the forward (backward.py keeps only each block's
      input), replay(name, x) hands back the value the forward pass went on with, so the loss and
      every gradient are those of the hooked forward;
    - cut(name, g) zeroes the gradient where it stops: everywhere for an array a function returned
      (a constant to autograd: a patch, a cached value), at the cells changed in place for one it
      changed (a[:, :, h] = 0 ablates head h; the other heads' gradients flow on).

    One difference from torch: a returned array computed from the activation (`return a * 2`) is a
    constant here, where autograd would differentiate the product; change `a` in place instead.
    """

    def __init__(self, replaced: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.kept = replaced  # name -> (value, cut)

    def wants(self, name: str) -> bool:
        return name in self.kept

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        kept = self.kept.get(name)
        return x if kept is None else kept[0].astype(x.dtype)  # a copy: the backward may write into it

    def cut(self, name: str, g: np.ndarray) -> np.ndarray:
        kept = self.kept.get(name)
        return g if kept is None else np.where(kept[1], 0, g).astype(g.dtype)  # [same shape as the point]


class CutAtReplacements(Hooks):
    """The backward's hooks (bwd_hooks) at each point, then replay.cut: a bwd hook sees the gradient
    at the value the forward went on with (TransformerLens's: at the hook's output), and what flows
    further back is cut where a forward hook replaced that value."""

    def __init__(self, inner: Hooks, replay: Replay) -> None:
        super().__init__(dtype=inner.dtype, one_sequence=inner.one_sequence)
        self.inner, self.replay, self.cache = inner, replay, inner.cache

    def wants(self, name: str) -> bool:
        return self.inner.wants(name) or self.replay.wants(name)

    def __call__(self, name: str, g: np.ndarray) -> np.ndarray:
        return self.replay.cut(name, self.inner(name, g))


def _with_batch_axis(fn: HookFn) -> HookFn:
    """fn, handed its activation with the batch axis of one sequence put back ([T, ...] -> [1, T, ...])."""

    def batched(a: np.ndarray, hook: HookPoint) -> ArrayLike | None:
        fn(a[None], hook)  # a view: what fn changes in place lands in a
        return None

    return batched


NO_HOOKS = Hooks()  # the plain forward pass: every hook(name, x) is x
