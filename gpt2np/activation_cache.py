"""The cache run_with_cache returns: a dict name -> array that also speaks TransformerLens.

It is a plain dict (`cache["blocks.0.attn.hook_pattern"]`, `list(cache)`, `.items()`), and it
answers what TransformerLens's ActivationCache answers, so interpretability code written for
TransformerLens runs on it:

    cache["pattern", 0]        -> cache["blocks.0.attn.hook_pattern"]   (get_act_name's shorthand)
    cache["resid_pre", -1]     -> the last block's hook_resid_pre        (negative layers count back)
    cache["scale"]             -> cache["ln_final.hook_scale"]
    cache.accumulated_resid(layer=None, incl_mid=False, apply_ln=False, pos_slice=None,
                            mlp_input=False, return_labels=False)    the logit lens's stack
    cache.apply_ln_to_stack(stack, layer=None, mlp_input=False, pos_slice=None)
    cache.stack_activation("pattern")                                 [n_layer, B, H, T, Tk]
    cache.remove_batch_dim()                                          [1, T, ...] -> [T, ...]

The hook_scale points (sqrt(var + eps) of each LayerNorm, [B, T, 1]) are recorded only when named
in names_filter; when one is read but was not recorded, it is computed here from the cached input
of its LayerNorm (ln1: hook_resid_pre, ln2: hook_resid_mid, ln_final: the last hook_resid_post),
with the forward pass's own formula (layers.layer_norm_scale). That input is the float64 residual
stream shown in the model's dtype, so in float32 the derived scale may differ from the forward
pass's in its last bit. It is not stored: the dict holds what was recorded.

apply_ln is TransformerLens's classic one: centre each vector and divide it by the cached scale of
the LayerNorm it would enter (for the logit lens: ln_final's, the final stream's scale, for every
layer). Like TransformerLens, it does not multiply by the LayerNorm's gain nor add its bias:
TransformerLens folds those into W_U and b_U; with gpt2np's unfolded weights, a logit lens is
`(stack * ln_f.weight + ln_f.bias) @ wte.T` (docs/cross-checking.md, section 6).

With the cache of gpt2np.hooked_transformer.HookedTransformer (which it holds as `model`), also
TransformerLens's direct logit attribution: decompose_resid, compute_head_results /
stack_head_results (each head's output from hook_z and W_O) and logit_attrs.

Not offered (a clear NotInGpt2npError): get_full_resid_decomposition, stack_neuron_results,
get_neuron_results, logit_lens, apply_slice_to_batch_dim, to, toggle_autodiff; the model-backed
methods above on GPT2.run_with_cache's cache (use HookedTransformer's); nor apply_ln_to_stack's
batch_slice and recompute_ln (TransformerLens's newest logit lens, which re-normalises each layer).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, MissingActivationError, NotInGpt2npError
from .layers import layer_norm_scale

# TransformerLens's shorthands (utils.get_act_name): what a short name stands for, and which
# sub-layer a name lives in when the caller does not say.
NAME_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v"}
NAME_ALIASES |= {"mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
SUBLAYER_ALIASES = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}
ATTN_NAMES = ("k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores")
MLP_NAMES = ("pre", "post", "mid", "pre_linear")
LAYER_NORM_NAMES = ("scale", "normalized")  # with no layer: ln_final's

NOT_OFFERED = (
    "get_full_resid_decomposition", "stack_neuron_results", "get_neuron_results", "logit_lens",
    "apply_slice_to_batch_dim", "to", "toggle_autodiff",
)  # fmt: skip


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """A point's full name from TransformerLens's shorthand, as TransformerLens's utils.get_act_name:

    get_act_name("pattern", 0)        -> "blocks.0.attn.hook_pattern"
    get_act_name("resid_pre", 3)      -> "blocks.3.hook_resid_pre"
    get_act_name("scale", 4, "ln1")   -> "blocks.4.ln1.hook_scale"
    get_act_name("scale")             -> "ln_final.hook_scale"
    get_act_name("k6"), get_act_name("scale4ln1")   (name, layer and sub-layer run together)
    get_act_name("blocks.0.hook_mlp_out")           (a full name is returned as it is)

    It only builds names: some (hook_result, hook_rot_q, ...) are no point of gpt2np's GPT-2,
    and looking one up in the cache says so."""
    if not isinstance(name, str):
        raise InputError(f"an activation name is a str like 'pattern' or 'blocks.0.attn.hook_pattern', got {name!r}")
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name  # already a full name
    packed = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)  # "scale4ln1" -> "scale", "4", "ln1"
    if packed is not None:
        name, layer, layer_type = packed.groups()
    name = NAME_ALIASES.get(name, name)
    if name in ATTN_NAMES:
        layer_type = "attn"
    elif name in MLP_NAMES:
        layer_type = "mlp"
    elif layer_type in SUBLAYER_ALIASES:
        layer_type = SUBLAYER_ALIASES[layer_type]
    full = "" if layer is None else f"blocks.{layer}."
    full += f"{layer_type}.hook_{name}" if layer_type else f"hook_{name}"
    if name in LAYER_NORM_NAMES and layer is None:
        full = "ln_final." + full
    return full


def slice_positions(a: np.ndarray, pos_slice: Any, axis: int = -2) -> np.ndarray:
    """a with TransformerLens's pos_slice applied along `axis` (the positions, second from the end):
    None keeps every position, an int picks one (and drops the axis, as TransformerLens does), a
    tuple is slice(*tuple), a slice, or a list / array of position indices."""
    if pos_slice is None:
        return a
    if isinstance(pos_slice, tuple):
        pos_slice = slice(*pos_slice)
    elif isinstance(pos_slice, (list, np.ndarray)):
        pos_slice = np.asarray(pos_slice)
        if pos_slice.dtype.kind not in "iu":
            raise InputError(f"pos_slice as a list or array must hold position indices, got {pos_slice!r}")
    elif not isinstance(pos_slice, (int, np.integer, slice)) or isinstance(pos_slice, bool):
        raise InputError(
            f"pos_slice must be None, an int, a (start, stop[, step]) tuple, a slice or a list of positions; "
            f"got {pos_slice!r}"
        )
    index: list[Any] = [slice(None)] * a.ndim
    index[axis] = pos_slice
    try:
        return a[tuple(index)]
    except IndexError:
        raise InputError(f"pos_slice {pos_slice!r} is out of range for {a.shape[axis]} positions") from None


class ActivationCache(dict[str, np.ndarray]):
    """{name: activation} from run_with_cache, in forward order; TransformerLens's lookups and
    helpers on top (see the module's docstring). n_layer and eps are the model's; has_batch_dim
    is False after remove_batch_dim (a 1-D input's cache is so from the start)."""

    def __init__(
        self,
        activations: Mapping[str, np.ndarray],
        n_layer: int,
        eps: float,
        has_batch_dim: bool = True,
        model: Any = None,
    ):
        super().__init__(activations)
        self.n_layer = n_layer
        self.eps = eps
        self.has_batch_dim = has_batch_dim
        self.model = model  # a HookedTransformer: its weights and tokenizer, for the methods that need them

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self)}"

    def __getattr__(self, attribute: str) -> Any:  # only reached for attributes the cache lacks
        if attribute in NOT_OFFERED:
            raise NotInGpt2npError(
                f"ActivationCache.{attribute} is TransformerLens's; gpt2np's cache offers accumulated_resid, "
                "apply_ln_to_stack, stack_activation, remove_batch_dim and cache[name] / cache[name, layer] "
                "(docs/cross-checking.md, section 6)"
            )
        raise AttributeError(f"'ActivationCache' object has no attribute {attribute!r}")

    # --- lookups --------------------------------------------------------------------------

    def name_of(self, key: str | tuple) -> str:
        """The full name a key stands for: a name or shorthand, or (name, layer[, sub-layer]) with
        negative layers counted from the end, as TransformerLens's cache[...]."""
        if isinstance(key, str):
            return key if key in self else get_act_name(key)
        if not isinstance(key, tuple) or not 1 <= len(key) <= 3:
            raise InputError(
                f"a cache key is a name ('blocks.0.attn.hook_z', 'pattern') or a tuple (name, layer[, sub-layer]) "
                f"like ('pattern', 0); got {key!r}"
            )
        name, layer, *rest = (*key, None) if len(key) == 1 else key
        if layer is not None:
            if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
                raise InputError(f"the layer in cache[{key!r}] must be an int, got {layer!r}")
            layer = int(layer) + self.n_layer if layer < 0 else int(layer)
        return get_act_name(name, layer, *rest)

    def __getitem__(self, key: str | tuple) -> np.ndarray:
        if isinstance(key, str) and key in self:
            return super().__getitem__(key)
        name = self.name_of(key)
        if name in self:
            return super().__getitem__(name)
        derived = self._derived_scale(name)
        if derived is not None:
            return derived
        raise self._missing(key, name)

    def _derived_scale(self, name: str) -> np.ndarray | None:
        """A hook_scale that was not recorded, from its LayerNorm's cached input; None if not derivable."""
        source = None
        if name == "ln_final.hook_scale":
            source = f"blocks.{self.n_layer - 1}.hook_resid_post"
        elif name.endswith(".ln1.hook_scale"):
            source = name.replace("ln1.hook_scale", "hook_resid_pre")
        elif name.endswith(".ln2.hook_scale"):
            source = name.replace("ln2.hook_scale", "hook_resid_mid")
        if source is None or source not in self:
            return None
        x = super().__getitem__(source)  # [B, T, C] or [T, C]
        return layer_norm_scale(x, self.eps).astype(x.dtype)  # [B, T, 1]

    def _missing(self, key: Any, name: str) -> MissingActivationError:
        shown = repr(key) if name == key else f"{key!r} ({name})"
        near = difflib.get_close_matches(name, list(self), n=3, cutoff=0.6)
        hint = f"; nearest held: {', '.join(near)}" if near else ""
        return MissingActivationError(
            f"{shown} is not in this cache{hint}. It holds {len(self)} points; names_filter chooses what "
            "run_with_cache records (gpt2np.hooks.hook_names(n_layer) lists every point: TransformerLens's "
            "hook_result, hook_rot_q, mlp.hook_mid and the like are not points of GPT-2)"
        )

    # --- TransformerLens's helpers ------------------------------------------------------------

    def _layer(self, layer: int | None, what: str) -> int:
        """None or -1 -> n_layer (the stream before the output layer); else 0 .. n_layer."""
        if layer is None or layer == -1:
            return self.n_layer
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= layer <= self.n_layer:
            raise InputError(
                f"{what}: layer must be None, -1 or 0 .. {self.n_layer} (the model's n_layer), got {layer!r}"
            )
        return int(layer)

    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """The residual stream as it stood before each block up to `layer` ([n, B, T, C]; the logit
        lens's stack), as TransformerLens's: hook_resid_pre of blocks 0 .. layer - 1, then layer's
        own (or, with layer None / -1 / n_layer, the last block's hook_resid_post, "final_post").

        incl_mid: hook_resid_mid of each block before `layer` after its resid_pre; mlp_input: that
        of `layer` too (the stream entering its MLP). apply_ln: centred and divided by the cached
        scale of the LayerNorm the stream enters at `layer` (ln_final's for the final stream; see
        apply_ln_to_stack). pos_slice: see slice_positions. return_labels: also ["0_pre", "0_mid",
        ..., "final_post"]."""
        layer = self._layer(layer, "accumulated_resid")
        if mlp_input and layer == self.n_layer:
            raise InputError(
                "accumulated_resid: mlp_input=True needs a block's layer (0 .. n_layer - 1), not the final one"
            )
        stack, labels = [], []
        for i in range(layer + 1):
            if i == self.n_layer:
                stack.append(self["resid_post", self.n_layer - 1])  # [B, T, C] ln_final's input
                labels.append("final_post")
                break
            stack.append(self["resid_pre", i])
            labels.append(f"{i}_pre")
            if (incl_mid and i < layer) or (mlp_input and i == layer):
                stack.append(self["resid_mid", i])
                labels.append(f"{i}_mid")
        components = np.stack([slice_positions(a, pos_slice) for a in stack])  # [n, B, T, C]
        if apply_ln:
            components = self.apply_ln_to_stack(components, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (components, labels) if return_labels else components

    def apply_ln_to_stack(
        self,
        residual_stack: np.ndarray,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> np.ndarray:
        """Each vector of a stack [n, B, T, C] (pos_slice already applied to it) as the LayerNorm
        entering `layer` would scale it, as TransformerLens's: centred, then divided by that
        LayerNorm's cached scale of the whole stream at the same position (ln_final's for layer None
        / -1 / n_layer; ln2's with mlp_input; else ln1's). No gain, no bias (see the module docstring)."""
        if batch_slice is not None:
            raise InputError(
                "apply_ln_to_stack: batch_slice is not offered; slice the stack and index the result instead"
            )
        if recompute_ln:
            raise InputError(
                "apply_ln_to_stack: recompute_ln is not offered; for each layer's own normalisation, apply "
                "gpt2np.layers.layer_norm(stack, model.weights.ln_f, model.config.layer_norm_epsilon)"
            )
        layer = self._layer(layer, "apply_ln_to_stack")
        if layer == self.n_layer:
            if mlp_input:
                raise InputError("apply_ln_to_stack: mlp_input=True needs a block's layer, not the final LayerNorm")
            scale = self["scale"]  # [B, T, 1]
        else:
            scale = self["scale", layer, "ln2" if mlp_input else "ln1"]  # [B, T, 1]
        scale = slice_positions(scale, pos_slice)  # as the stack was sliced
        stack = np.asarray(residual_stack, dtype=np.float64)  # [n, B, T, C]
        centred = stack - stack.mean(axis=-1, keepdims=True)
        return (centred / scale).astype(residual_stack.dtype)  # [n, B, T, C]

    def _needs_model(self, what: str) -> Any:
        if self.model is None:
            raise NotInGpt2npError(
                f"ActivationCache.{what} needs the model's weights: run the model through "
                "gpt2np.hooked_transformer.HookedTransformer, whose run_with_cache returns a cache that has them"
            )
        return self.model

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """The stream entering `layer` as the sum of what wrote it, as TransformerLens's: embed,
        pos_embed, then each block's attn_out and mlp_out ([n, B, T, C]); mode "attn" / "mlp" keeps
        one kind; mlp_input adds `layer`'s own attn_out. apply_ln: see apply_ln_to_stack."""
        layer = self._layer(layer, "decompose_resid")
        if mode not in ("all", "attn", "mlp"):
            raise InputError(f"decompose_resid: mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        parts: list[tuple[str, str]] = []
        if incl_embeds:
            parts += [("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")]
        for i in range(layer):
            if mode != "mlp":
                parts.append((f"blocks.{i}.hook_attn_out", f"{i}_attn_out"))
            if mode != "attn":
                parts.append((f"blocks.{i}.hook_mlp_out", f"{i}_mlp_out"))
        if mlp_input and mode != "mlp":
            parts.append((f"blocks.{layer}.hook_attn_out", f"{layer}_attn_out"))
        components = np.stack([slice_positions(self[name], pos_slice) for name, _ in parts])  # [n, B, T, C]
        if apply_ln:
            components = self.apply_ln_to_stack(components, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (components, [label for _, label in parts]) if return_labels else components

    def compute_head_results(self) -> None:
        """Each head's output, blocks.{i}.attn.hook_result [B, T, H, C] = hook_z [B, T, H, D] through
        the head's rows of W_O [H, D, C]: the layer's attn_out is their sum plus b_O."""
        model = self._needs_model("compute_head_results")
        for i in range(self.n_layer):
            name = f"blocks.{i}.attn.hook_result"
            if name not in self:
                z = self[f"blocks.{i}.attn.hook_z"]  # [B, T, H, D]
                self[name] = np.einsum("...hd,hdc->...hc", z, model.blocks[i].attn.W_O).astype(z.dtype)

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Any = None,
        apply_ln: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """Every head's output before `layer`, stacked [layer x H, B, T, C] with labels "L{l}H{h}",
        as TransformerLens's; incl_remainder adds the rest of the stream (resid minus the heads)."""
        layer = self._layer(layer, "stack_head_results")
        self._needs_model("stack_head_results")
        self.compute_head_results()
        heads = [
            slice_positions(self[f"blocks.{i}.attn.hook_result"], pos_slice, axis=-3) for i in range(layer)
        ]  # [B, T, H, C]
        H = self.model.cfg.n_heads
        labels = [f"L{i}H{h}" for i in range(layer) for h in range(H)]
        stack = [np.moveaxis(a, -2, 0) for a in heads]  # each [H, B, T, C]
        components = (
            np.concatenate(stack) if stack else np.zeros((0, *slice_positions(self["hook_embed"], pos_slice).shape))
        )
        if incl_remainder:
            whole = slice_positions(
                self["resid_pre", layer] if layer < self.n_layer else self["resid_post", -1], pos_slice
            )
            components = np.concatenate([components, (whole - components.sum(axis=0))[None]])
            labels.append("remainder")
        if apply_ln:
            components = self.apply_ln_to_stack(components, layer, pos_slice=pos_slice)
        return (components, labels) if return_labels else components

    def logit_attrs(
        self,
        residual_stack: np.ndarray,
        tokens: Any,
        incorrect_tokens: Any = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> np.ndarray:
        """How much each component of a stack [n, ..., C] writes in each token's unembedding direction
        (minus incorrect_tokens' when given), after ln_final's scaling: TransformerLens's."""
        model = self._needs_model("logit_attrs")
        directions = model.tokens_to_residual_directions(tokens)  # [..., C]
        if incorrect_tokens is not None:
            wrong = model.tokens_to_residual_directions(incorrect_tokens)
            if wrong.shape != directions.shape:
                raise InputError(
                    f"tokens and incorrect_tokens must have the same shape, got {directions.shape[:-1]} and "
                    f"{wrong.shape[:-1]}"
                )
            directions = directions - wrong
        scaled = self.apply_ln_to_stack(residual_stack, -1, pos_slice=pos_slice, batch_slice=batch_slice)
        return (scaled * directions).sum(axis=-1)

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> np.ndarray:
        """One activation of every block before `layer` (None / -1: all), stacked: [layer, ...],
        as TransformerLens's: stack_activation("pattern") is [n_layer, B, H, T, Tk]."""
        layer = self._layer(layer, "stack_activation")
        return np.stack([self[activation_name, i, sublayer_type] for i in range(layer)])

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the batch axis of a batch of one, in place ([1, T, ...] -> [T, ...]); returns the
        cache. A cache of several rows is an error; one already without it is left as it is."""
        if not self.has_batch_dim:
            warnings.warn("remove_batch_dim: this cache has no batch axis already", stacklevel=2)
            return self
        rows = {a.shape[0] for a in self.values()}
        if rows - {1}:
            raise InputError(
                f"remove_batch_dim: the cache holds a batch of {max(rows)} rows; it drops the batch axis of one "
                "row only (pick one with {name: a[i] for name, a in cache.items()})"
            )
        for name, a in self.items():
            self[name] = a[0]
        self.has_batch_dim = False
        return self
