"""Training GPT-2: AdamW as torch.optim.AdamW computes it, gradient clipping as
torch.nn.utils.clip_grad_norm_ does, and nanoGPT's learning-rate schedule.

    from gpt2np import GPT2
    from gpt2np.train import AdamW, clip_grad_norm, get_lr

    model = GPT2.from_pretrained("weights/tiny")
    opt = AdamW(model, lr=3e-4, weight_decay=0.1, decay="2d")   # takes writable copies of the weights
    for step in range(100):
        loss, grads = model.loss_and_grads(input_ids, attention_mask=attention_mask)
        norm = clip_grad_norm(grads, 1.0)
        opt.step(grads, lr=get_lr(step, 3e-4, 3e-5, warmup=10, decay_steps=100))

One AdamW step, for each parameter p with gradient g, at step t (from 1):

    p = p * (1 - lr * weight_decay)             decoupled weight decay (Loshchilov & Hutter): not in g
    m = m + (1 - beta1) * (g - m)               the mean of the gradients, decaying (torch: lerp)
    v = beta2 * v + (1 - beta2) * g * g         the mean of their squares
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The two (1 - beta^t) undo the zeros m and v start from (bias correction): without them the first
steps would be beta-times too small. eps is added outside the square root, as torch does. Where
home-made trainers go wrong, each written out: decay coupled into g is Adam with L2 (the decay
then gets divided by sqrt(v)); decay="2d" decays only the matrices and the embeddings (every
parameter of two or more dimensions), never a bias or a LayerNorm, as nanoGPT and llm.c's
train_gpt2.py group them; decay="all" decays every parameter (plain torch.optim.AdamW and llm.c's
C update). Clipping scales every gradient by one factor from the norm of all of them together.

The state (m, v for each parameter, and t) is plain named arrays: state_dict() / load_state_dict(),
saved as safetensors (never pickled) by save() / load(). tests/test_train.py holds ten steps of
forward, backward, clip and AdamW equal to torch's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .weights import named_parameters, weights_from_tensors

DECAY_MODES = ("2d", "all")
STEP_CHUNK = 1 << 16  # elements per pass of the update and the norm: the chunks stay in cache


def make_trainable(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as writable arrays it computes with: a loaded checkpoint is
    memory-mapped read-only, so each array is copied once (one checkpoint's size in memory: 0.5 GB
    for GPT-2 124M in float32) and model.weights is rebuilt on the copies. Arrays already writable
    and owned are kept. -> {name: array}: changing one in place changes the model."""
    params = named_parameters(model.weights)
    if all(a.flags.writeable and a.flags.owndata for a in params.values()):
        return params
    copies = {name: np.array(a, copy=True) for name, a in params.items()}  # writable, in the model's dtype
    model.weights = weights_from_tensors(
        copies, model.config, dtype=model.dtype, source="the trained weights", check_values=False
    )
    return named_parameters(model.weights)


def decays(name: str, p: np.ndarray, decay: str) -> bool:
    """Does weight decay touch this parameter? "2d": matrices and embeddings only; "all": every one."""
    return decay == "all" or p.ndim >= 2


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / (total norm + 1e-6) when that is below 1, in place, as
    torch.nn.utils.clip_grad_norm_; -> the total norm before clipping: sqrt of the sum of every
    gradient's squares (one norm over all of them, not one per tensor). Summed in float64."""
    if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or not 0 < max_norm < math.inf:
        raise InputError(f"max_norm must be a positive finite number, got {max_norm!r}")
    total = 0.0  # the sum of squares, STEP_CHUNK values at a time in float64 (no float64 copy of it all)
    for g in grads.values():
        flat = g.reshape(-1)  # [N]
        for start in range(0, flat.size, STEP_CHUNK):
            chunk = flat[start : start + STEP_CHUNK].astype(np.float64)  # [<= STEP_CHUNK]
            total += float(np.dot(chunk, chunk))
    total = math.sqrt(total)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total


def get_lr(step: int, lr: float, min_lr: float, warmup: int, decay_steps: int) -> float:
    """nanoGPT's schedule: a linear warmup over `warmup` steps, then a cosine decay to min_lr at
    `decay_steps`, then min_lr. step counts from 0."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay_steps:
        return min_lr
    ratio = (step - warmup) / max(1, decay_steps - warmup)  # 0 .. 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def _check_hyper(lr: Any, betas: Any, eps: Any, weight_decay: Any, decay: Any) -> None:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

    if not number(lr) or lr < 0:
        raise InputError(f"lr must be a finite number >= 0, got {lr!r}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(number(b) and 0 <= b < 1 for b in betas)):
        raise InputError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not number(eps) or eps <= 0:
        raise InputError(f"eps must be a positive number, got {eps!r}")
    if not number(weight_decay) or weight_decay < 0:
        raise InputError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if decay not in DECAY_MODES:
        raise InputError(f"decay must be '2d' (matrices and embeddings only, as nanoGPT) or 'all', got {decay!r}")


def update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    t: int,
) -> None:
    """One AdamW update of one parameter p with gradient g and moments m, v, in place (the rule
    in the module's docstring, in p's dtype), STEP_CHUNK elements at a time with two scratch
    arrays: written out whole, each line below would make a temporary of p's size and pass over
    memory again (about 5x slower for GPT-2 124M). The operations and their order are those of

        p *= 1 - lr * weight_decay
        m += (1 - beta1) * (g - m)
        v *= beta2;  v += (1 - beta2) * g * g
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    so the bits are the same (tests/test_train.py holds them to the formula and to torch)."""
    dtype = p.dtype.type
    beta1, beta2 = betas
    shrink, step = dtype(1 - lr * weight_decay), dtype(lr / (1 - beta1**t))
    root_correction = dtype(math.sqrt(1 - beta2**t))
    fp, fg, fm, fv = (a.reshape(-1) for a in (p, g, m, v))  # [N] views (contiguous arrays)
    a, b = np.empty(min(STEP_CHUNK, fp.size), p.dtype), np.empty(min(STEP_CHUNK, fp.size), p.dtype)  # scratch
    for start in range(0, fp.size, STEP_CHUNK):
        stop = min(start + STEP_CHUNK, fp.size)
        cp, cg, cm, cv, ca, cb = fp[start:stop], fg[start:stop], fm[start:stop], fv[start:stop], a, b
        if stop - start < a.size:
            ca, cb = a[: stop - start], b[: stop - start]
        if weight_decay:
            cp *= shrink  # decoupled: the decay never passes through m and v
        np.subtract(cg, cm, out=ca)
        ca *= dtype(1 - beta1)
        cm += ca  # torch's lerp_(g, 1 - beta1)
        cv *= dtype(beta2)
        np.multiply(cg, dtype(1 - beta2), out=ca)
        ca *= cg
        cv += ca
        np.sqrt(cv, out=ca)
        ca /= root_correction
        ca += dtype(eps)  # eps outside the root
        np.multiply(cm, step, out=cb)
        cb /= ca
        cp -= cb


class AdamW:
    """torch.optim.AdamW's update on a GPT2's weights (torch's defaults and names); see the module's
    docstring for the rule. step(grads) takes model.loss_and_grads' dict."""

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        decay: str = "2d",
    ) -> None:
        _check_hyper(lr, betas, eps, weight_decay, decay)
        self.model = model
        self.lr, self.betas, self.eps, self.weight_decay, self.decay = (
            float(lr),
            (float(betas[0]), float(betas[1])),
            eps,
            weight_decay,
            decay,
        )
        self.params = make_trainable(model)  # {name: the array the model computes with}
        self.exp_avg = {name: np.zeros_like(p) for name, p in self.params.items()}  # m
        self.exp_avg_sq = {name: np.zeros_like(p) for name, p in self.params.items()}  # v
        self.t = 0

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        """One update of every parameter, in place. lr: this step's rate (a schedule's), else self.lr."""
        missing = set(self.params) - set(grads)
        if missing:
            raise InputError(
                f"step: no gradient for {sorted(missing)[0]} (and {len(missing) - 1} more); pass loss_and_grads' dict"
            )
        lr = self.lr if lr is None else lr
        _check_hyper(lr, self.betas, self.eps, self.weight_decay, self.decay)
        self.t += 1
        for name, p in self.params.items():
            g = grads[name].astype(p.dtype, copy=False)
            if g.shape != p.shape:
                raise InputError(
                    f"step: the gradient of {name} has shape {list(g.shape)}, the parameter {list(p.shape)}"
                )
            decay = self.weight_decay if decays(name, p, self.decay) else 0.0
            update(p, g, self.exp_avg[name], self.exp_avg_sq[name], lr, decay, self.betas, self.eps, self.t)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain named arrays: exp_avg.<name>, exp_avg_sq.<name>, step (what save() writes)."""
        state = {"step": np.array([self.t], dtype=np.int64)}
        state |= {f"exp_avg.{n}": a for n, a in self.exp_avg.items()}
        return state | {f"exp_avg_sq.{n}": a for n, a in self.exp_avg_sq.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            for kind, into in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                a = state.get(f"{kind}.{name}")
                if a is None or a.shape != p.shape:
                    raise InputError(f"the optimizer state has no {kind} of shape {list(p.shape)} for {name}")
                into[name] = np.array(a, dtype=p.dtype)
        self.t = int(np.asarray(state["step"]).reshape(-1)[0])

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | Path) -> None:
        from safetensors.numpy import load_file

        self.load_state_dict(load_file(str(path)))
