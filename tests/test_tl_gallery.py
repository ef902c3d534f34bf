"""The TransformerLens gallery: gpt2np's HookedTransformer against TransformerLens's own, number by number.

The gallery: snippets of TransformerLens's Main Demo and Exploratory Analysis Demo (caching, head
ablation, activation patching, induction scores, the logit lens, direct logit attribution, head
results, weights and circuits, generation, IOI patching). Each snippet's text below runs twice,
unchanged: once after `from transformer_lens import HookedTransformer, utils` with TransformerLens
3's model (tests/tl_reference.py: built offline from the same random model, no weight processing),
once after `from gpt2np.hooked_transformer import HookedTransformer, utils` with gpt2np's. The
snippets are TransformerLens's text with the torch idioms that read activations written the NumPy
way, the same for both (the README lists them): result stores are `np.zeros`, `.gather` is
`np.take_along_axis`, `.diagonal(dim1=, dim2=)` is `np.diagonal(axis1=, axis2=)`, `.detach()` is
`float()` / `np.asarray()`. Tokens made with torch (torch.randint, torch.tensor) go into both. Every value a snippet returns is
compared: strings and token ids exactly, numbers within float32 noise.

Needs TransformerLens (the test extra pins 3.9.0); without it the module skips (in CI it fails).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from conftest import require_module

from gpt2np.factored_matrix import FactoredMatrix
from gpt2np.hooked_transformer import HookedTransformer

transformer_lens = require_module("transformer_lens", "pip install -e '.[test]'")
torch = require_module("torch")

MODEL = "small-outliers"  # 4 layers, 4 heads, GPT-2's vocabulary: the tokenizer's ids fit

SNIPPETS = {
    # Main Demo, "Caching all activations"
    "caching": """
        gpt2_text = "Natural language processing tasks, such as question answering, machine translation, reading comprehension, and summarization, are typically approached with supervised learning on taskspecific datasets."
        gpt2_tokens = model.to_tokens(gpt2_text)
        gpt2_logits, gpt2_cache = model.run_with_cache(gpt2_tokens, remove_batch_dim=True)
        attention_pattern = gpt2_cache["pattern", 0, "attn"]
        gpt2_str_tokens = model.to_str_tokens(gpt2_text)
        result = {"tokens": gpt2_tokens, "pattern": attention_pattern, "str_tokens": gpt2_str_tokens,
                  "logits": gpt2_logits, "normalized": gpt2_cache["blocks.1.ln2.hook_normalized"],
                  "scores": gpt2_cache["attn_scores", 2], "scale": gpt2_cache["scale", 1, "ln1"]}
    """,
    # Main Demo, "Hooks: intervening on activations" (head ablation)
    "head_ablation": """
        layer_to_ablate = 0
        head_index_to_ablate = 2

        def head_ablation_hook(value, hook):
            value[:, :, head_index_to_ablate, :] = 0.0
            return value

        gpt2_tokens = model.to_tokens("The quick brown fox jumps over the lazy dog because it wanted to")
        original_loss = model(gpt2_tokens, return_type="loss")
        ablated_loss = model.run_with_hooks(
            gpt2_tokens, return_type="loss", fwd_hooks=[(utils.get_act_name("v", layer_to_ablate), head_ablation_hook)]
        )
        result = {"original_loss": original_loss, "ablated_loss": ablated_loss}
    """,
    # Main Demo, "Activation Patching on the Residual Stream"
    "activation_patching": """
        from functools import partial

        clean_prompt = "After John and Mary went to the store, Mary gave a bottle of milk to"
        corrupted_prompt = "After John and Mary went to the store, John gave a bottle of milk to"
        clean_tokens = model.to_tokens(clean_prompt)
        corrupted_tokens = model.to_tokens(corrupted_prompt)

        def logits_to_logit_diff(logits, correct_answer=" John", incorrect_answer=" Mary"):
            correct_index = model.to_single_token(correct_answer)
            incorrect_index = model.to_single_token(incorrect_answer)
            return logits[0, -1, correct_index] - logits[0, -1, incorrect_index]

        clean_logits, clean_cache = model.run_with_cache(clean_tokens)
        clean_logit_diff = logits_to_logit_diff(clean_logits)
        corrupted_logits = model(corrupted_tokens)
        corrupted_logit_diff = logits_to_logit_diff(corrupted_logits)

        def residual_stream_patching_hook(resid_pre, hook, position):
            clean_resid_pre = clean_cache[hook.name]
            resid_pre[:, position, :] = clean_resid_pre[:, position, :]
            return resid_pre

        num_positions = len(clean_tokens[0])
        ioi_patching_result = np.zeros((model.cfg.n_layers, num_positions))
        for layer in range(model.cfg.n_layers):
            for position in range(num_positions):
                temp_hook_fn = partial(residual_stream_patching_hook, position=position)
                patched_logits = model.run_with_hooks(
                    corrupted_tokens, fwd_hooks=[(utils.get_act_name("resid_pre", layer), temp_hook_fn)]
                )
                patched_logit_diff = logits_to_logit_diff(patched_logits)
                ioi_patching_result[layer, position] = float(
                    (patched_logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
                )
        result = {"clean": clean_logit_diff, "corrupted": corrupted_logit_diff, "patching": ioi_patching_result}
    """,
    # Main Demo, "Hooks: accessing activations" (induction scores)
    "induction_scores": """
        import einops

        seq_len = 20
        batch_size = 2
        prev_tokens = torch.randint(10000, 20000, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        repeated_tokens = einops.repeat(prev_tokens, "batch seq_len -> batch (2 seq_len)")
        induction_score_store = np.zeros((model.cfg.n_layers, model.cfg.n_heads))

        def induction_score_hook(pattern, hook):
            induction_stripe = np.diagonal(np.asarray(pattern), axis1=-2, axis2=-1, offset=1 - seq_len)
            induction_score = einops.reduce(induction_stripe, "batch head_index position -> head_index", "mean")
            induction_score_store[hook.layer(), :] = induction_score

        pattern_hook_names_filter = lambda name: name.endswith("pattern")
        model.run_with_hooks(
            repeated_tokens, return_type=None, fwd_hooks=[(pattern_hook_names_filter, induction_score_hook)]
        )
        result = {"induction_scores": induction_score_store}
    """,
    # Exploratory Analysis Demo: the IOI prompts, logit difference, logit lens, DLA, head results
    "exploratory_analysis": """
        prompt_format = [
            "When John and Mary went to the shops,{} gave the bag to",
            "When Tom and James went to the park,{} gave the ball to",
            "When Dan and Sid went to the shops,{} gave an apple to",
            "After Martin and Amy went to the park,{} gave a drink to",
        ]
        names = [(" John", " Mary"), (" Tom", " James"), (" Dan", " Sid"), (" Martin", " Amy")]
        prompts, answers = [], []
        for i in range(len(prompt_format)):
            for j in range(2):
                answers.append((names[i][j], names[i][1 - j]))
                prompts.append(prompt_format[i].format(names[i][1 - j]))
        answer_tokens = torch.tensor([[model.to_single_token(answers[i][j]) for j in range(2)] for i in range(len(answers))])
        tokens = model.to_tokens(prompts, prepend_bos=True)
        original_logits, cache = model.run_with_cache(tokens)

        def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
            final_logits = logits[:, -1, :]
            answer_logits = np.take_along_axis(np.asarray(final_logits), np.asarray(answer_tokens), axis=-1)
            answer_logit_diff = answer_logits[:, 0] - answer_logits[:, 1]
            if per_prompt:
                return answer_logit_diff
            return answer_logit_diff.mean()

        original_per_prompt_diff = logits_to_ave_logit_diff(original_logits, answer_tokens, per_prompt=True)
        answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
        logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
        final_residual_stream = cache["resid_post", -1]
        final_token_residual_stream = final_residual_stream[:, -1, :]
        scaled_final_token_residual_stream = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)
        average_logit_diff = (np.asarray(scaled_final_token_residual_stream) * np.asarray(logit_diff_directions)).sum() / len(prompts)

        def residual_stack_to_logit_diff(residual_stack, cache):
            scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
            return (np.asarray(scaled_residual_stack) * np.asarray(logit_diff_directions)).sum(-1).mean(-1)

        accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
        logit_lens_logit_diffs = residual_stack_to_logit_diff(accumulated_residual, cache)
        per_layer_residual, layer_labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
        per_layer_logit_diffs = residual_stack_to_logit_diff(per_layer_residual, cache)
        per_head_residual, head_labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
        per_head_logit_diffs = residual_stack_to_logit_diff(per_head_residual, cache)
        attrs = cache.logit_attrs(per_head_residual, answer_tokens[:, 0], answer_tokens[:, 1], pos_slice=-1)
        result = {"per_prompt": original_per_prompt_diff, "average": average_logit_diff, "labels": labels,
                  "logit_lens": logit_lens_logit_diffs, "layer_labels": layer_labels, "per_layer": per_layer_logit_diffs,
                  "head_labels": head_labels, "per_head": per_head_logit_diffs, "logit_attrs": attrs}
    """,
    # Exploratory Analysis Demo, "Activation patching": each head's output (hook_z) patched
    "head_patching": """
        clean_tokens = model.to_tokens("When John and Mary went to the shops, John gave the bag to")
        corrupted_tokens = model.to_tokens("When John and Mary went to the shops, Mary gave the bag to")
        mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
        _, clean_cache = model.run_with_cache(clean_tokens)

        def patch_head_vector(corrupted_head_vector, hook, head_index, clean_cache):
            corrupted_head_vector[:, :, head_index, :] = clean_cache[hook.name][:, :, head_index, :]
            return corrupted_head_vector

        patched = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
        for layer in range(model.cfg.n_layers):
            for head_index in range(model.cfg.n_heads):
                hook_fn = lambda z, hook: patch_head_vector(z, hook, head_index, clean_cache)
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(utils.get_act_name("z", layer, "attn"), hook_fn)])
                patched[layer, head_index] = float(logits[0, -1, mary] - logits[0, -1, john])
        result = {"patched": patched}
    """,
    # Main Demo, "Dealing with tokens"
    "tokens": """
        example_text = "The first thing you need to figure out is *how* things are tokenized."
        example_text_str_tokens = model.to_str_tokens(example_text)
        example_text_tokens = model.to_tokens(example_text)
        example_multi_text = ["The cat sat on the mat.", "The cat sat on the mat really hard."]
        example_multi_text_tokens = model.to_tokens(example_multi_text)
        cat_text = "The cat sat on the mat."
        cat_position = model.get_token_position(" cat", cat_text)
        no_bos = model.to_str_tokens("Hello", prepend_bos=False)
        result = {"str_tokens": example_text_str_tokens, "tokens": example_text_tokens,
                  "multi": example_multi_text_tokens, "cat_position": cat_position, "no_bos": no_bos,
                  "string": model.to_string(example_text_tokens[0, 1:]), "single": model.to_single_token(" mat")}
    """,
    # Main Demo, "Getting model weights" and "Factored Matrix Class"
    "weights_and_circuits": """
        OV_circuit_all_heads = model.OV
        OV_circuit_all_heads_eigenvalues = OV_circuit_all_heads.eigenvalues
        OV_copying_score = OV_circuit_all_heads_eigenvalues.sum(-1).real / np.abs(OV_circuit_all_heads_eigenvalues).sum(-1)
        result = {"W_Q": model.blocks[1].attn.W_Q, "W_O": model.W_O, "b_K": model.b_K, "W_in": model.W_in,
                  "W_E": model.W_E, "W_U": model.W_U, "W_pos": model.W_pos, "ln1_w": model.blocks[0].ln1.w,
                  "OV_shape": tuple(OV_circuit_all_heads.shape), "OV_S": OV_circuit_all_heads[1, 2].S,
                  "QK_norm": model.QK[0, 1].norm(), "copying": OV_copying_score,
                  "full_OV_row": (model.W_E[:3] @ model.OV[1, 0] @ model.W_U[:, :5]).AB}
    """,
    # Main Demo, generation (greedy: sampling cannot draw torch's random numbers)
    "generate": """
        text = model.generate("The cat sat on the", max_new_tokens=8, do_sample=False, verbose=False)
        tokens = model.generate(model.to_tokens("My dog is"), max_new_tokens=5, do_sample=False, verbose=False)
        result = {"text": text, "tokens": tokens}
    """,
    # run_with_cache's options: names_filter, stop_at_layer, return_type="both"
    "cache_options": """
        tokens = model.to_tokens("Mechanistic interpretability is the study of")
        (logits, loss), cache = model.run_with_cache(tokens, return_type="both", names_filter=lambda n: n.endswith("hook_z"))
        resid = model(tokens, stop_at_layer=2)
        per_token = model(tokens, return_type="loss", loss_per_token=True)
        result = {"loss": loss, "keys": sorted(cache.keys()), "z": cache["z", 3], "resid": resid, "per_token": per_token}
    """,
    # Main Demo, hooks added to the model: add_hook, reset_hooks, the hooks() context, hook_dict
    "hook_management": """
        tokens = model.to_tokens("Hooks can also be added to the model itself")
        seen = []

        def record_norm(resid, hook):
            seen.append(float(np.abs(np.asarray(resid)).sum()))

        model.add_hook("blocks.1.hook_resid_post", record_norm)
        first = model(tokens)
        model.reset_hooks()
        plain = model(tokens)

        def zero_mlp(mlp_out, hook):
            return mlp_out * 0.0

        with model.hooks(fwd_hooks=[(utils.get_act_name("mlp_out", 0), zero_mlp)]):
            ablated = model(tokens)
        after = model(tokens)
        model.hook_dict["blocks.0.attn.hook_pattern"].add_hook(record_norm)
        model(tokens)
        model.reset_hooks()
        result = {"seen": seen, "first": first, "plain": plain, "ablated": ablated, "after": after}
    """,
    # The layer norms and the logit lens by hand (normalized before the gain, as TL 3 records it)
    "normalized_by_hand": """
        tokens = model.to_tokens("LayerNorm: centre, divide by the scale, then gain and bias")
        _, cache = model.run_with_cache(tokens)
        normalized = cache["ln_final.hook_normalized"]
        by_hand = np.asarray(normalized) * np.asarray(model.ln_final.w) + np.asarray(model.ln_final.b)
        logits_by_hand = by_hand @ np.asarray(model.W_U) + np.asarray(model.b_U)
        result = {"normalized": normalized, "logits_by_hand": logits_by_hand, "unembed_in": cache["unembed.hook_in"]}
    """,
}


@pytest.fixture(scope="module")
def models(model_dir, tokenizer_dir):
    from tl_reference import tl_hooked_transformer

    was = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # as TransformerLens's demos start; process-wide, so put back after
    folder = model_dir(MODEL)
    yield {
        "transformer_lens": tl_hooked_transformer(folder, tokenizer_dir),
        "gpt2np": HookedTransformer.from_pretrained(str(folder)),
    }
    torch.set_grad_enabled(was)


def run(snippet: str, library: str, model) -> dict:
    """The snippet after the library's import line, with its model (the two lines that differ)."""
    if library == "transformer_lens":
        preamble = "from transformer_lens import HookedTransformer, utils\n"
    else:
        preamble = "from gpt2np.hooked_transformer import HookedTransformer, utils\n"
    space = {"np": np, "torch": torch, "model": model}
    exec(preamble + textwrap.dedent(snippet), space)
    return space["result"]


def as_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, transformer_lens.FactoredMatrix):
        return value.AB.detach().numpy()
    if isinstance(value, FactoredMatrix):
        return value.AB
    return value


# Values that divide by a small difference of two logits: their float32 noise is the logits'
# (2e-5 of their scale) divided by clean - corrupted (about 0.04 on this random model).
LOOSER = {"activation_patching: patching": 1e-3}


def same(theirs, ours, where: str) -> None:
    theirs, ours = as_numpy(theirs), as_numpy(ours)
    if isinstance(theirs, (str, int)) or (isinstance(theirs, (list, tuple)) and theirs and isinstance(theirs[0], str)):
        assert ours == theirs, where
        return
    if isinstance(theirs, (list, tuple)) and not isinstance(theirs[0] if theirs else 0, (int, float)):
        assert len(ours) == len(theirs), where
        for i, (t, o) in enumerate(zip(theirs, ours)):
            same(t, o, f"{where}[{i}]")
        return
    t, o = np.asarray(theirs), np.asarray(ours)
    assert t.shape == o.shape, f"{where}: shape {o.shape}, TransformerLens {t.shape}"
    if t.dtype.kind in "iub":
        np.testing.assert_array_equal(o, t, err_msg=where)
        return
    finite = np.isfinite(t)
    np.testing.assert_array_equal(np.isfinite(o), finite, err_msg=f"{where}: where the values are finite")
    np.testing.assert_array_equal(o[~finite], t[~finite], err_msg=f"{where}: the non-finite values")
    scale = max(1.0, float(np.abs(t[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(o[finite], t[finite], rtol=0, atol=LOOSER.get(where, 2e-5) * scale, err_msg=where)


@pytest.mark.transformers
@pytest.mark.parametrize("name", list(SNIPPETS))
def test_transformer_lens_demo_snippets_give_transformer_lens_numbers(models, name):
    theirs = run(SNIPPETS[name], "transformer_lens", models["transformer_lens"])
    ours = run(SNIPPETS[name], "gpt2np", models["gpt2np"])
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        same(theirs[key], ours[key], f"{name}: {key}")


@pytest.mark.transformers
def test_every_point_of_the_cache_matches_transformer_lens(models):
    """Every point TransformerLens 3 caches, held by gpt2np's view under the same name and value
    (hook_normalized before the gain, -inf in masked scores included)."""
    tl, ours = models["transformer_lens"], models["gpt2np"]
    text = "When John and Mary went to the shops, John gave the bag to"
    _, theirs = tl.run_with_cache(tl.to_tokens(text))
    _, mine = ours.run_with_cache(ours.to_tokens(text))
    assert list(mine) == list(theirs.keys())  # the same points, in the same order
    for name in theirs:
        same(theirs[name], mine[name], name)
