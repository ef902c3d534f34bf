"""transformers' GPT-2, read at every one of gpt2np's activation points (for the tests).

Each point is taken from the transformers module that computes it, with torch forward hooks
(and pre-hooks for a module's input), never recomputed here by hand:

    hook_embed / hook_pos_embed     wte / wpe outputs
    hook_resid_pre                  ln_1's input          ln1.hook_normalized   ln_1's output
    hook_q / hook_k / hook_v        attn.c_attn's output, split in 3 and into heads
    hook_attn_scores                the input of the eager attention's softmax
    hook_pattern                    the attention weights (output_attentions=True)
    hook_z                          attn.c_proj's input   hook_attn_out         attn.c_proj's output
    hook_resid_mid                  ln_2's input          ln2.hook_normalized   ln_2's output
    mlp.hook_pre / mlp.hook_post    mlp.c_fc's / mlp.act's output
    hook_mlp_out                    mlp.c_proj's output
    hook_resid_post                 the next hidden state (the last: ln_f's input)
    ln_final.hook_normalized        ln_f's output         logits                the logits
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np


@contextmanager
def captured_softmax_inputs(store: list):
    """Record every input of torch.nn.functional.softmax (the eager attention calls it once
    per layer, on the masked scores) while the block runs."""
    import torch

    original = torch.nn.functional.softmax

    def recording(x, *args, **kwargs):
        store.append(x.detach().clone())
        return original(x, *args, **kwargs)

    torch.nn.functional.softmax = recording
    try:
        yield
    finally:
        torch.nn.functional.softmax = original


def hf_points(hf, input_ids, attention_mask, position_ids) -> dict[str, np.ndarray]:
    """Run transformers' eager GPT2LMHeadModel `hf` once; -> {gpt2np name: array} in gpt2np's layout."""
    import torch

    t = hf.transformer
    H = hf.config.n_head
    got, handles, scores = {}, [], []

    def out(name, fn=lambda y: y):
        def hook(module, args, output):
            got[name] = fn(output).detach().numpy().copy()

        return hook

    def inp(name, fn=lambda y: y):
        def hook(module, args):
            got[name] = fn(args[0]).detach().numpy().copy()

        return hook

    def heads(y):  # [B, T, C] -> [B, T, H, D]
        return y.reshape(*y.shape[:2], H, -1)

    handles.append(t.wte.register_forward_hook(out("hook_embed")))
    handles.append(t.wpe.register_forward_hook(out("hook_pos_embed")))
    for i, block in enumerate(t.h):
        p = f"blocks.{i}."
        handles.append(block.ln_1.register_forward_pre_hook(inp(p + "hook_resid_pre")))
        handles.append(block.ln_1.register_forward_hook(out(p + "ln1.hook_normalized")))
        for j, name in enumerate("qkv"):
            handles.append(
                block.attn.c_attn.register_forward_hook(
                    out(p + f"attn.hook_{name}", lambda y, j=j: heads(y.chunk(3, dim=-1)[j]))
                )
            )
        handles.append(block.attn.c_proj.register_forward_pre_hook(inp(p + "attn.hook_z", heads)))
        handles.append(block.attn.c_proj.register_forward_hook(out(p + "hook_attn_out")))
        handles.append(block.ln_2.register_forward_pre_hook(inp(p + "hook_resid_mid")))
        handles.append(block.ln_2.register_forward_hook(out(p + "ln2.hook_normalized")))
        handles.append(block.mlp.c_fc.register_forward_hook(out(p + "mlp.hook_pre")))
        handles.append(block.mlp.act.register_forward_hook(out(p + "mlp.hook_post")))
        handles.append(block.mlp.c_proj.register_forward_hook(out(p + "hook_mlp_out")))
    handles.append(t.ln_f.register_forward_pre_hook(inp(f"blocks.{len(t.h) - 1}.hook_resid_post")))
    handles.append(t.ln_f.register_forward_hook(out("ln_final.hook_normalized")))
    try:
        with torch.no_grad(), captured_softmax_inputs(scores):
            result = hf(
                torch.tensor(input_ids),
                attention_mask=torch.tensor(attention_mask),
                position_ids=torch.tensor(position_ids),
                output_hidden_states=True,
                output_attentions=True,
            )
    finally:
        for h in handles:
            h.remove()
    assert len(scores) == len(t.h), "expected one softmax per layer (eager attention)"
    for i in range(len(t.h)):
        got[f"blocks.{i}.attn.hook_attn_scores"] = scores[i].numpy()
        got[f"blocks.{i}.attn.hook_pattern"] = result.attentions[i].numpy()
        if i < len(t.h) - 1:
            got[f"blocks.{i}.hook_resid_post"] = result.hidden_states[i + 1].numpy()
    got["logits"] = result.logits.numpy()
    return got
