"""`gpt2np explain`: it runs with and without a model, and what it prints comes from the library."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from conftest import ROOT, SEED_ATTENTION_MASK, SEED_INPUT_IDS, SEED_SENTENCES, page_args

from gpt2np import GPT2, plain
from gpt2np.tools.cli import main
from gpt2np.tools.explain import STEPS, mib, show_padding, show_parameters

DOC = ROOT / "docs" / "how-it-works.md"


def explain(capsys, *args):
    code = main(["explain", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_run(model_dir, tokenizer_dir):
    """One full run on the tiny random model (captured without capsys: module-scoped)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["explain", "--model", str(model_dir("tiny")), "--tokenizer", str(tokenizer_dir)])
    return code, out.getvalue()


def test_every_step_runs_with_a_model(tiny_run):
    code, out = tiny_run
    assert code == 0
    for number, (title, _) in enumerate(STEPS.values(), start=1):
        assert f"== {number}. {title} ==" in out
    assert "needs the model" not in out and "not on this machine" not in out


def test_batch_arrays_are_the_tokenizers(tiny_run, tokenizer):
    _, out = tiny_run
    tok = copy.copy(tokenizer)  # the session's tokenizer keeps its settings
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    batch = tok(SEED_SENTENCES, padding=True)
    assert np.array_equal(batch["input_ids"], SEED_INPUT_IDS)  # the known seed ids
    assert np.array2string(SEED_INPUT_IDS, max_line_width=110).replace("\n", "\n    ") in out
    assert np.array2string(SEED_ATTENTION_MASK, max_line_width=110).replace("\n", "\n    ") in out
    positions = np.where(SEED_ATTENTION_MASK == 1, np.cumsum(SEED_ATTENTION_MASK, axis=1) - 1, 0)
    assert np.array2string(positions).replace("\n", "\n    ") in out
    assert "'My dog is' would sit at positions [5, 6, 7]\ninstead of [0, 1, 2]" in out


def test_nan_and_uniform_rows_and_what_attention_does(tiny_run):
    _, out = tiny_run
    T = SEED_INPUT_IDS.shape[1]
    assert re.search(r"fill -inf = -inf +softmax = +(nan +){%d}" % (T - 1) + "nan\n", out)  # noqa: UP031  (% keeps the regex's {n} braces single)
    uniform = f"{1 / T:.3f}"  # a finite fill spreads the row evenly over all T keys
    assert re.search(r"fill -1e9 = -1e\+09 +softmax = +(%s +){%d}%s\n" % (uniform, T - 1, uniform), out)  # noqa: UP031
    assert "NaN anywhere in the output: False" in out
    assert "empty rows (mask.empty_rows): [0, 1, 2]; largest |output| of those rows: 0.0" in out
    assert "max |logits(fill) - logits(min)| over the real tokens:\n  -inf 0.0, -1e9 0.0, min 0.0" in out


def test_generation_is_the_models(tiny_run, model_dir, tokenizer):
    _, out = tiny_run
    model = GPT2.from_pretrained(model_dir("tiny"))
    tokens = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=10)
    T = SEED_INPUT_IDS.shape[1]
    assert np.array2string(tokens[:, T:], max_line_width=110).replace("\n", "\n    ") in out
    for i, sentence in enumerate(SEED_SENTENCES):
        assert f"{sentence!r} -> {tokenizer.decode(tokens[i, T:], skip_special_tokens=True)!r}" in out
    assert "gives the same tokens as in the batch: [True, True, True]" in out


def test_numbers_come_from_the_library(monkeypatch, tokenizer_dir, capsys):
    """Replace the library function, and the printed numbers change with it."""
    import gpt2np.tools.explain

    monkeypatch.setattr(gpt2np.tools.explain, "position_ids_from_mask", lambda mask: np.full(mask.shape, 7))
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "positions")
    assert code == 0 and "[[7 7 7 7 7 7 7 7]" in out
    monkeypatch.setattr(gpt2np.tools.explain, "softmax", lambda x: np.full_like(x, 0.5))
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "softmax")
    assert "   0.500   0.500   0.500" in out


def test_without_a_model_the_tokenizer_steps_still_run(tmp_path, tokenizer_dir, capsys):
    code, out, err = explain(capsys, "--model", tmp_path / "missing", "--tokenizer", tokenizer_dir)
    assert code == 0 and err == ""
    assert "== 7. Softmax of a masked row ==" in out
    assert "Generation needs the model's weights" in out and "no folder" in out


def test_without_a_model_it_says_which_command_gets_one(tmp_path, monkeypatch, tokenizer_dir, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never try the network from a test
    monkeypatch.setenv("GPT2NP_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "generate")
    assert code == 0 and "`gpt2np download gpt2`" in out


def test_without_weights_every_step_but_the_models_runs_on_the_shipped_tokenizer(tmp_path, monkeypatch, capsys):
    """No --tokenizer, no --model, no weights, offline: steps 1 to 7 all print (7 without its
    model check), step 8 says how to get the weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GPT2NP_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, err = explain(capsys)
    assert code == 0 and err == ""
    for number, (title, _) in enumerate(STEPS.values(), start=1):
        assert f"== {number}. {title} ==" in out
    assert "Generation needs the model's weights" in out and "`gpt2np download gpt2`" in out
    assert "[[50256 50256 50256  1026   481  6290   287   262]" in out


def test_a_missing_tokenizer_is_an_error(tmp_path, capsys):
    code, out, err = explain(capsys, "--model", tmp_path / "missing")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "--tokenizer" in err


def test_steps_can_be_chosen(tokenizer_dir, capsys):
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "mask", "--step", "tokens")
    assert code == 0
    assert re.findall(r"^== (\d+)\.", out, flags=re.M) == ["1", "6"]  # in the walkthrough's order


def test_user_sentences_and_row(tokenizer_dir, capsys):
    code, out, _ = explain(
        capsys, "--tokenizer", tokenizer_dir, "--step", "mask", "--row", "1", "Hello", "Hello there world"
    )
    assert code == 0 and "Row 1 of the batch ('Hello there world')" in out
    assert "No query of this row is a pad" in out
    code, _, err = explain(capsys, "--tokenizer", tokenizer_dir, "--row", "5", "Hello")
    assert code == 1 and "--row 5" in err


def test_equal_lengths_need_no_padding(tokenizer):
    text = show_padding(tokenizer, ["My dog is", "My cat is"])
    assert "shape [2, 3]" in text and "no padding is needed" in text


def test_the_mask_step_of_a_batch_with_no_padding(tokenizer_dir, capsys):
    """No row padded: the mask has no empty rows at all (empty_rows is None), which the mask
    step once indexed anyway (a TypeError)."""
    code, out, err = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "mask", "My dog is", "My cat is")
    assert code == 0, err
    assert "No query of this row is a pad" in out


# --- the docs show real output ------------------------------------------------------------


def doc_blocks(text: str):
    """(command, output) of every ```console block that runs `gpt2np explain`."""
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command, _, output = block.partition("\n")
        if command.startswith("$ gpt2np explain"):
            yield command[2:], output


def test_docs_show_what_explain_prints(model_dir, capsys):
    blocks = list(doc_blocks(DOC.read_text(encoding="utf-8")))
    assert len(blocks) >= 6
    for command, shown in blocks:
        args = page_args(command, model_dir)  # without "gpt2np", the page's models as the test models
        code, out, _ = explain(capsys, *args[1:])
        assert code == 0
        assert out == shown, (
            f"docs/how-it-works.md shows stale output for `{command}`; paste the command's output again"
        )


def test_docs_link_to_files_that_exist():
    for target in re.findall(r"\]\((\.\./[^)#]+)", DOC.read_text(encoding="utf-8")):
        assert (DOC.parent / target).exists(), target


# --- --mask-fill and --dtype are the ones shown ---------------------------------------------


@pytest.mark.parametrize("dtype, shown", [("float32", "-3.4e+38"), ("float64", "-1.8e+308")])
def test_the_mask_and_softmax_steps_use_the_fill_and_dtype_asked_for(capsys, dtype, shown):
    code, out, _ = explain(capsys, "--step", "mask", "--step", "softmax", "--mask-fill", "min", "--dtype", dtype)
    assert code == 0 and "-inf" not in out
    assert f"the fill (here min = {shown} in {dtype})" in out
    assert re.search(rf"query 0 \[pad\]( +{re.escape(shown)}){{8}}\n", out)  # the whole pad row is the fill
    assert re.search(rf"\+ mask row 7( +{re.escape(shown)}){{3}}( +0){{5}}\n", out)
    assert f"underflows to 0 in {dtype}" in out
    code, out, _ = explain(capsys, "--step", "mask", "--mask-fill", "-1e9")
    assert "the fill (here -1e9 = -1e+09 in float32)" in out


def test_explains_default_fill_is_minus_inf():
    from gpt2np.tools.cli import build_parser

    assert build_parser().parse_args(["explain"]).mask_fill == "-inf"
    assert build_parser().parse_args(["generate", "x"]).mask_fill == "min"  # the model's default elsewhere


def test_minus_1e9_is_uniform_in_float32_only(capsys, model_dir):
    """In float64, score - 1e9 keeps the scores' differences: the forbidden row is softmax(scores)."""
    row = lambda out, fill: re.search(rf"fill {re.escape(fill)} = \S+ +softmax = (.*)\n", out).group(1).split()
    code, out32, _ = explain(capsys, "--step", "empty-rows", "--model", model_dir("tiny"))
    code64, out64, _ = explain(capsys, "--step", "empty-rows", "--model", model_dir("tiny"), "--dtype", "float64")
    assert code == code64 == 0
    assert set(row(out32, "-1e9")) == {"0.125"} and set(row(out32, "min")) == {"0.125"}
    scores = np.random.default_rng(0).standard_normal(8).round(2)  # explain's made-up scores (demo_scores)
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    assert row(out64, "-1e9") == [f"{p:.3f}" for p in expected]  # softmax(scores): nothing masked
    assert set(row(out64, "min")) == {"0.125"}
    assert "With -1e9, the row is softmax(scores) itself" in out64 and "are 64 apart" in out64
    assert "With -1e9 and min, the scores all round to the same huge negative number" in out32


# --- the block step: one token through block 0, read from run_with_cache -------------------


def test_block_step_prints_the_cached_activations(model_dir, tokenizer_dir, capsys):
    folder = model_dir("tiny")
    code, out, _ = explain(capsys, "--model", folder, "--tokenizer", tokenizer_dir, "--step", "block")
    assert code == 0 and "== 11. Inside block 0" in out
    model = GPT2.from_pretrained(folder)
    logits, cache = model.run_with_cache(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK)
    row, t = 0, 7  # the first padded row's last token
    for name in (
        "hook_embed",
        "blocks.0.ln1.hook_normalized",
        "blocks.0.hook_attn_out",
        "blocks.0.mlp.hook_post",
        "blocks.0.hook_resid_post",
    ):
        shown = " ".join(f"{x:.3f}" for x in cache[name][row, t][:6])
        assert re.search(rf"\[{re.escape(shown)} \.\.\.\] \(\d+\) +{re.escape(name)}", out), name
    pattern = cache["blocks.0.attn.hook_pattern"][row, 0, t]
    assert "".join(f"{x:>9}" for x in ["0", "0", "0"] + [f"{p:.3f}" for p in pattern[3:]]) in out
    best = int(logits[row, t].argmax())
    assert f"id {best:>5}" in out.split("most likely next tokens")[1].splitlines()[1]
    assert "model.generate picks" in out


def test_block_step_without_a_model_says_so(tmp_path, tokenizer_dir, capsys):
    code, out, _ = explain(capsys, "--model", tmp_path / "missing", "--tokenizer", tokenizer_dir, "--step", "block")
    assert code == 0 and "Looking inside a block needs the model's weights" in out


# --- the decode, parameters, gelu and bpe steps ---------------------------------------------


def test_decode_step_shows_the_shapes_and_positions_of_a_real_step(model_dir, tokenizer_dir, capsys):
    folder = model_dir("tiny")
    code, out, _ = explain(capsys, "--model", folder, "--tokenizer", tokenizer_dir, "--step", "decode")
    assert code == 0 and "== 13. One decode step through the KV cache" in out
    model = GPT2.from_pretrained(folder)
    cfg = model.config
    B, T, H, D = 3, 8, cfg.n_head, cfg.head_dim
    first = model.generate(SEED_INPUT_IDS, attention_mask=SEED_ATTENTION_MASK, max_new_tokens=1)[:, -1]
    positions = np.where(SEED_ATTENTION_MASK == 1, np.cumsum(SEED_ATTENTION_MASK, axis=1) - 1, 0)[:, -1] + 1
    assert f"[{first[0]}, {first[1]}, {first[2]}]" in out  # the tokens generate picks first
    assert f"{[int(p) for p in positions]}: each row's last position + 1" in out  # [5, 8, 3]
    assert re.search(rf"^  q +\[{B}, {H}, 1, {D}\] ", out, flags=re.M)
    assert re.search(rf"^  k, v after cache.update +\[{B}, {H}, {T + 1}, {D}\] ", out, flags=re.M)
    assert re.search(rf"^  the additive mask +\[{B}, 1, 1, {T + 1}\] ", out, flags=re.M)
    assert "gives the same next tokens: yes" in out and "within 1e-4: yes" in out


def expected_parameters(cfg, tied: bool) -> int:
    """GPT-2's count from its config alone (not from the arrays, as the step counts):
    embeddings, per block 2 LayerNorms + c_attn + c_proj + c_fc + c_proj, ln_f, and an untied head."""
    C, F = cfg.n_embd, cfg.mlp_width
    block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C)
    return cfg.vocab_size * C + cfg.n_positions * C + cfg.n_layer * block + 2 * C + (0 if tied else cfg.vocab_size * C)


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_parameters_step_counts_what_the_config_says(model_dir, name):
    model = GPT2.from_pretrained(model_dir(name))
    out = show_parameters(model)
    tied = model.config.tie_word_embeddings
    total = int(out.split("  total")[1].split()[0].replace(",", ""))
    assert total == expected_parameters(model.config, tied)
    assert ("tied: it is wte" in out) == tied and ("lm_head (untied)" in out) == (not tied)


def test_gpt2s_shape_has_124439808_parameters():
    """The number every GPT-2 reader meets, from the formula (the docs' block shows the step's
    count for the 124M-shaped test model, re-run by test_docs_show_what_explain_prints)."""
    from gpt2np.config import GPT2Config

    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
    assert expected_parameters(cfg, tied=True) == 124_439_808


def test_gelu_step_compares_the_two_forms(model_dir, tokenizer_dir, capsys):
    import math

    code, out, _ = explain(capsys, "--model", model_dir("tiny"), "--tokenizer", tokenizer_dir, "--step", "gelu")
    assert code == 0
    grid = np.linspace(-6, 6, 120001)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in grid])
    gap = np.abs(plain.gelu(grid) - exact)
    assert f"over [-6, 6]: {gap.max():.1e}, at x = {grid[gap.argmax()]:.2f}." in out  # 4.7e-04 at -2.70
    assert "the next tokens the same: yes" in out


def test_bpe_step_merges_to_the_tokenizers_tokens(tokenizer, tokenizer_dir, capsys):
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "bpe")
    assert code == 0 and "== 2. BPE" in out
    word = out.split("\n")[2].split(", the batch's word")[0]  # "' will'": the word shown
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(eval(word)))
    assert f"tokens {pieces}" in out
    assert "the same ids: yes" in out


def test_bpe_step_shows_the_words_of_the_sentence_its_word_comes_from(tokenizer_dir, capsys):
    """Issue 35: it printed the first sentence's words, then walked through a word of another."""
    code, out, _ = explain(capsys, "--tokenizer", tokenizer_dir, "--step", "bpe", "The cat sat", "My dog will bark")
    sentence = re.search(r"Words of '(.*?)'", out).group(1)
    word = eval(out.split("\n")[2].split(", the batch's word")[0])
    assert word in sentence


@pytest.mark.parametrize("step", ["decode", "parameters", "gelu"])
def test_the_model_steps_without_a_model_say_so(tmp_path, tokenizer_dir, capsys, step):
    code, out, _ = explain(capsys, "--model", tmp_path / "missing", "--tokenizer", tokenizer_dir, "--step", step)
    assert code == 0 and "needs the model's weights" in out and "no folder" in out


def test_the_page_follows_explains_order():
    """Each step's block stands in the section of docs/how-it-works.md that has its number (issue
    35: the page printed step 13 right after step 1), and the sections come in explain's order."""
    text = DOC.read_text(encoding="utf-8")
    numbers = {name: i for i, name in enumerate(STEPS, start=1)}
    seen = []
    for heading, body in re.findall(r"\n## (.*?)\n(.*?)(?=\n## |\Z)", text, flags=re.S):
        first, _, last = heading.split(".")[0].partition("-")
        for step in re.findall(r"\$ gpt2np explain .*?--step (\S+)", body):
            if first.isdigit():
                assert int(first) <= numbers[step] <= int(last or first), f"--step {step} under '## {heading}'"
            seen.append(numbers[step])
    assert seen == sorted(seen) and set(seen) == set(numbers.values())


def test_the_parameters_step_says_the_memory_to_train(model_dir):
    """Weights, gradients and AdamW's two moments in float32: 1, 1 and 2 times the weights' bytes
    (counted here from the arrays the model holds); the activations loss_and_grads keeps."""
    model = GPT2.from_pretrained(model_dir("tiny"))
    out = show_parameters(model)
    nbytes = sum(a.astype(np.float32).nbytes for a in model.weights.arrays())
    assert f"weights {mib(nbytes)}, gradients {mib(nbytes)}" in out
    assert f"AdamW's two moments {mib(2 * nbytes)}" in out
    cfg = model.config
    # The activations: what backward.block_forward really keeps for one block at B = 4, T = context
    # (its input besides), counted from the arrays, times the layers; with checkpointing, the inputs.
    from gpt2np.backward import block_forward
    from gpt2np.masks import build_attention_mask

    B, T = 4, cfg.n_positions
    x = np.zeros((B, T, cfg.n_embd))  # [B, T, C] float64: a block's input
    mask = build_attention_mask(np.ones((B, T), dtype=np.int64), T, model.fill, model.dtype)
    kept = x.nbytes + sum(a.nbytes for a in block_forward(model, 0, x, mask)[1].values())
    assert f"= {mib(cfg.n_layer * kept)};" in out
    assert f"only each block's input, {mib(cfg.n_layer * x.nbytes)}" in out
