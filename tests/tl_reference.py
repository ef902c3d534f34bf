"""TransformerLens's own HookedTransformer, built offline from a gpt2np model folder with no weight
processing (TransformerLens's from_pretrained_no_processing, without the hub): the reference the
gallery (tests/test_hooked_transformer.py) compares gpt2np's HookedTransformer with."""

from __future__ import annotations

from pathlib import Path


def tl_hooked_transformer(folder: Path, tokenizer_dir: Path, dtype: str = "float32"):
    import torch
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    torch_dtype = getattr(torch, dtype)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=torch_dtype)
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
        normalization_type="LN", eps=c.layer_norm_epsilon, original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True, dtype=torch_dtype, device="cpu", model_name="gpt2",
    )  # fmt: skip
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))  # a folder: no network
    model = HookedTransformer(cfg, tokenizer=tok)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )  # fmt: skip
    model.eval()
    return model
