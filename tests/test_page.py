"""`gpt2np page`: the data the page embeds equals the model's own numbers, the file needs nothing
from outside, and in a real browser (headless Chromium, driven by Playwright) the page shows
what run_with_cache computes: every head, the weight under the mouse, masked cells said to be
masked, the fills' pad rows, the temperature/top-k/top-p probabilities of sampling.py.

The browser is Debian's chromium (.ci/run installs it); without it these tests skip saying why,
except in CI, where a missing browser fails. A screenshot of the page is kept in test-output/
($GPT2NP_TEST_OUTPUT), for a person to look at.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, ROOT, SEED_SENTENCES, require_module

from gpt2np import GPT2, InputError, Tokenizer
from gpt2np.sampling import filter_logits
from gpt2np.tools.cli import main
from gpt2np.tools.page import MAX_ROWS, MAX_TOKENS, page_data, render

OUTPUT = Path(os.environ.get("GPT2NP_TEST_OUTPUT", ROOT / "test-output"))


@pytest.fixture(scope="module")
def tiny_dir(model_dir):
    return model_dir("tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return GPT2.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def seed(tiny, tiny_dir, tok):
    """The seed batch's page data and the model's own numbers for it, computed apart."""
    data = page_data(tiny, tok, SEED_SENTENCES, model_name=str(tiny_dir))
    ids, mask = np.array(data["input_ids"]), np.array(data["attention_mask"])
    logits, cache = tiny.run_with_cache(ids, attention_mask=mask)
    return data, ids, mask, logits, cache


def floats(b64: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4").reshape(shape)


# --- the data -------------------------------------------------------------------------------


def test_the_batch_is_the_left_padded_seed(seed):
    data, ids, mask, _, _ = seed
    assert ids.tolist() == [[50256] * 3 + [1026, 481, 6290, 287, 262], [40, 765, 284, 4483, 257, 1263, 9396, 286],
                            [50256] * 5 + [3666, 3290, 318]]  # fmt: skip
    assert data["position_ids"][2] == [0, 0, 0, 0, 0, 0, 1, 2]  # pads 0 (never read), then cumsum - 1
    assert data["pad_queries"] == [[0, 0], [0, 1], [0, 2], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4]]
    assert data["shown"]["481"] == "␣will"  # the leading space made visible
    assert data["pieces"]["481"] == "Ġwill"


def test_the_weights_are_run_with_caches_patterns_bit_for_bit(seed, tiny):
    data, _, _, logits, cache = seed
    L, H = tiny.config.n_layer, tiny.config.n_head
    pattern = floats(data["pattern"], (L, 3, H, 8, 8))
    for layer in range(L):
        np.testing.assert_array_equal(pattern[layer], cache["pattern", layer])
    np.testing.assert_array_equal(floats(data["last_logits"], (3, -1)), logits[:, -1])
    assert data["next_top"][0][0] == int(logits[0, -1].argmax())


def test_the_logit_lens_is_ln_f_and_the_output_layer_on_each_stream(seed, tiny):
    data, _, _, logits, cache = seed
    stack = cache.accumulated_resid()  # [L + 1, B, T, C]: TransformerLens's stack, as the page's
    assert len(data["lens_ids"]) == tiny.config.n_layer + 1
    w = tiny.weights
    for s, x in enumerate(stack.astype(np.float64)):
        centred = x - x.mean(-1, keepdims=True)
        normed = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5) * w.ln_f.weight + w.ln_f.bias
        z = normed @ w.lm_head.T.astype(np.float64)  # [B, T, V] computed here in float64
        probs = np.exp(z - z.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        for b, t in [(0, 3), (1, 7), (2, 7)]:
            top = data["lens_ids"][s][b][t]
            assert top[0] == int(probs[b, t].argmax())
            np.testing.assert_allclose(data["lens_probs"][s][b][t], probs[b, t, top], rtol=1e-4)
    # the last line is the model's own prediction
    assert data["lens_ids"][-1][1][7][0] == int(logits[1, 7].argmax())


def test_each_fill_gives_real_tokens_the_same_weights_and_pads_their_own_row(seed):
    data, *_ = seed
    rows = {f: floats(data["fills"][f]["pad_rows"], (2, 2, 8, 8)) for f in ("-inf", "-1e9", "min")}  # [L, H, P, T]
    assert np.isnan(rows["-inf"]).all()  # a row of -inf only: 0/0
    # float32: fill + a small score rounds to the fill, so every cell of the row is equal: 1/T
    np.testing.assert_allclose(rows["-1e9"], 1 / 8, rtol=1e-6)
    np.testing.assert_allclose(rows["min"], 1 / 8, rtol=1e-6)
    assert all(data["fills"][f]["real_max_diff"] == 0 for f in rows)  # gpt2np's rule: fills agree on real tokens
    assert data["fills"]["-inf"]["fill"] == "-Infinity"  # JSON has no infinity


def test_the_page_is_one_self_contained_file(seed):
    html = render(seed[0])

    found: list[tuple[str, str]] = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("src", "href") or tag == "link":
                    found.append((tag, f"{name}={value}"))

    Refs().feed(html)
    assert found == []  # no script, style sheet, image or link loaded from anywhere
    assert not re.search(r"https?://|@import|url\(", html)
    assert "/*DATA*/" not in html


def test_a_string_in_the_data_cannot_end_the_script(tiny, tok):
    html = render(page_data(tiny, tok, ["</script><b>x"], model_name="tiny"))
    assert html.count("</script>") == 2  # the two scripts' own ends, nothing from the prompt


@pytest.mark.parametrize("prompts, limit", [(["word " * (MAX_TOKENS + 1)], f"at most {MAX_TOKENS} tokens"),
                                            (["a"] * (MAX_ROWS + 1), f"at most {MAX_ROWS} prompts")])  # fmt: skip
def test_too_long_input_is_refused_naming_the_limit(tiny, tok, prompts, limit):
    with pytest.raises(InputError, match=limit):
        page_data(tiny, tok, prompts)


def test_the_command_writes_the_page_and_follows_the_overwrite_rule(tiny_dir, tmp_path, capsys):
    out = tmp_path / "seed.html"
    args = ["page", *SEED_SENTENCES, "--model", str(tiny_dir), "--out", str(out)]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out and out.stat().st_size > 0
    assert main([*args, "--layers", "1"]) == 0  # a page of ours is replaced
    assert main([*args, "--layers", "2"]) == 1
    assert "layers 0 .. 1" in capsys.readouterr().err
    mine = tmp_path / "mine.html"
    mine.write_text("<p>my own page</p>")
    assert main([*args[:-1], str(mine)]) == 1  # anything else is kept without --overwrite
    assert "already exists" in capsys.readouterr().err and mine.read_text() == "<p>my own page</p>"
    assert main([*args[:-1], str(mine), "--overwrite"]) == 0
    weights = tiny_dir / "model.safetensors"
    assert main([*args[:-1], str(weights)]) == 1  # never the model's own files
    assert "destroy the model" in capsys.readouterr().err


# --- in a real browser ------------------------------------------------------------------------

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium on this machine (apt-get install chromium, as .ci/run does)"
        if IN_CI:
            pytest.fail("CI must run the browser tests, but " + message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser():
    sync_api = require_module("playwright.sync_api", "pip install -e '.[test]'")
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page_file(seed, tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "seed.html"
    path.write_text(render(seed[0]), encoding="utf-8")
    return path


@pytest.fixture
def page(browser, page_file):
    """The page opened from file://, with every console error and page error collected."""
    pg = browser.new_page(viewport={"width": 1250, "height": 900})
    pg.errors = []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(page_file.as_uri())
    yield pg
    assert pg.errors == []  # no test may leave a console error behind
    pg.close()


def tip_after_hovering(page, selector: str) -> str:
    page.hover(selector)
    return page.inner_text("#tip")


def exact_value(tip: str) -> float:
    return float(re.search(r"exact (\S+?)\)", tip).group(1))


def test_the_page_loads_with_every_head_and_no_console_error(page, tiny):
    assert page.errors == []
    assert page.locator("canvas.head").count() == tiny.config.n_layer * tiny.config.n_head
    page.select_option("#layer", "1")
    assert page.locator("canvas.head").count() == tiny.config.n_head
    assert "not GPT-2's published weights" in page.inner_text("#weights-note")  # a random model says so
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.select_option("#layer", "all")
    page.click("canvas.head[data-li='0'][data-head='1']")
    page.hover("#zoom td.cell[data-q='5'][data-k='3']")
    page.screenshot(path=str(OUTPUT / "page-seed.png"), full_page=True)


@pytest.mark.parametrize("row, layer, head", [(0, 0, 1), (1, 1, 0), (2, 1, 1)])
def test_hovering_a_cell_shows_run_with_caches_weight(page, seed, row, layer, head):
    _, _, mask, _, cache = seed
    page.select_option("#row", str(row))
    page.click(f"canvas.head[data-li='{layer}'][data-head='{head}']")
    real = np.flatnonzero(mask[row])
    for q in real[-3:]:
        for k in real[: q - real[0] + 1][-3:]:
            tip = tip_after_hovering(page, f"#zoom td.cell[data-q='{q}'][data-k='{k}']")
            assert f"query {q}" in tip and f"key {k}" in tip
            assert np.float32(exact_value(tip)) == cache["pattern", layer][row, head, q, k], tip


def test_a_masked_cell_says_masked_and_differs_from_a_zero(page):
    page.select_option("#row", "1")
    page.click("canvas.head[data-li='0'][data-head='0']")
    tip = tip_after_hovering(page, "#zoom td.cell[data-q='2'][data-k='5']")  # a future key
    assert "masked" in tip and "future" in tip
    assert "masked" in page.get_attribute("#zoom td.cell[data-q='2'][data-k='5']", "class")
    assert "masked" not in page.get_attribute("#zoom td.cell[data-q='5'][data-k='2']", "class")
    page.select_option("#row", "0")
    tip = tip_after_hovering(page, "#zoom td.cell[data-q='5'][data-k='1']")  # a pad key
    assert "masked" in tip and "pad" in tip


def test_switching_fills_shows_the_pad_rows_and_real_tokens_stay(page):
    page.select_option("#row", "0")
    page.click("canvas.head[data-li='1'][data-head='0']")
    real_cell = "#zoom td.cell[data-q='6'][data-k='4']"
    real_before = page.inner_text(real_cell)
    assert page.inner_text("#zoom td.cell[data-q='1'][data-k='0']") == ""  # gpt2np's rule: masked, weight 0
    page.check("input[name='padview'][value='-inf']")
    assert page.inner_text("#zoom td.cell[data-q='1'][data-k='0']") == "NaN"
    assert "NaN" in tip_after_hovering(page, "#zoom td.cell[data-q='1'][data-k='1']")
    page.check("input[name='padview'][value='-1e9']")
    assert exact_value(tip_after_hovering(page, "#zoom td.cell[data-q='1'][data-k='0']")) == pytest.approx(1 / 8)
    assert page.inner_text(real_cell) == real_before
    assert "at most 0" in page.inner_text("#fill-note")


def test_hiding_pads_drops_their_rows_and_columns(page):
    page.select_option("#row", "2")
    page.click("canvas.head[data-li='0'][data-head='0']")
    assert page.locator("#zoom tr[data-q]").count() == 8
    assert page.get_attribute("canvas.head[data-li='0'][data-head='0']", "data-tokens") == "8"
    page.uncheck("#showpads")
    assert page.locator("#zoom tr[data-q]").count() == 3  # "My dog is": 3 real tokens
    assert page.locator("#zoom td.cell").count() == 9
    assert page.get_attribute("canvas.head[data-li='0'][data-head='0']", "data-tokens") == "3"


def shown_probs(page, row: int) -> dict[int, float]:
    items = page.locator(f"ol.next[data-row='{row}'] li")
    return {int(items.nth(i).get_attribute("data-id")): float(items.nth(i).get_attribute("data-prob"))
            for i in range(items.count())}  # fmt: skip


def set_value(page, selector: str, value) -> None:
    page.eval_on_selector(
        selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }", str(value)
    )


@pytest.mark.parametrize("temperature, top_k, top_p", [(1, 0, 1), (0.7, 0, 1), (1.6, 0, 1), (0.9, 40, 1),
                                                       (1.2, 0, 0.5), (0.8, 100, 0.3)])  # fmt: skip
def test_the_next_token_probabilities_are_samplings(page, seed, temperature, top_k, top_p):
    _, _, _, logits, _ = seed
    set_value(page, "#temp", temperature)
    set_value(page, "#topk", top_k)
    set_value(page, "#topp", top_p)
    last = logits[:, -1].astype(np.float64)  # [B, V]
    for row in range(3):
        # the reference: sampling.py's warper chain in float64, then softmax (the distribution
        # generate(do_sample=True) draws from); at T=1 with no cut-off, softmax(logits / T) itself
        z = filter_logits(last[row : row + 1], temperature=temperature, top_k=top_k, top_p=top_p)[0]
        expected = np.exp(z - z.max())
        expected /= expected.sum()
        shown = shown_probs(page, row)
        assert len(shown) == 10
        for token, p in shown.items():
            assert p == pytest.approx(expected[token], rel=1e-9, abs=1e-15), (row, token)
