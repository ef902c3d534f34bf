"""docs/how-it-works.md shows real output: every command block is re-run and compared.

The `gpt2np explain` blocks are compared character for character by tests/test_explain.py.
The others here: building the test model, the mask picture, `score`, `generate` and `crosscheck`. Their
numbers come from float32 matrix products whose last digits depend on the BLAS and the thread
count, so a printed number may differ from a re-run by one unit of its last printed digit
(`score` prints only digits that mean something, so that is all the slack it needs);
`crosscheck`'s differences against transformers are rounding noise, which moves with the BLAS
kernel by more than a factor (see assert_same_crosscheck): they must stay under the tolerance
the table states. Everything else must match exactly.

And every relative link in README.md and docs/*.md points at a file that exists.
"""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
from conftest import PAGE_MODELS, ROOT, page_args

from gpt2np.tools.cli import main

DOC = ROOT / "docs" / "how-it-works.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?")


def console_blocks() -> list[tuple[str, str]]:
    """(command, output) of every ```console block of the page."""
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        command, _, output = block.partition("\n")
        assert command.startswith("$ "), f"a console block must start with '$ command': {command!r}"
        blocks.append((command[2:], output))
    return blocks


def last_digit_unit(number: str) -> float:
    """'-16.520' -> 0.001, '2.992e+07' -> 1e4, '305' -> 1."""
    mantissa, _, exponent = number.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def assert_same_output(shown: str, actual: str, what: str = "") -> None:
    """Same text; numbers equal, or within one unit of the last printed digit."""
    assert NUMBER.sub("#", shown) == NUMBER.sub("#", actual), f"docs/how-it-works.md shows stale output for `{what}`"
    for a, b in zip(NUMBER.findall(shown), NUMBER.findall(actual)):
        if a == b:
            continue
        x, y = float(a), float(b)
        rounded = "." in a or "e" in a  # integers (ids, counts, positions) must match exactly
        assert rounded and abs(x - y) <= last_digit_unit(a) * 1.0001, (
            f"`{what}`: the docs show {a}, a re-run prints {b}"
        )


def run_cli(capsys, command: str, model_dir) -> str:
    assert main(page_args(command, model_dir)) == 0
    out = capsys.readouterr().out
    for folder, name in PAGE_MODELS.items():
        out = out.replace(str(model_dir(name)), folder)
    return out


def test_every_block_is_checked():
    """A new kind of block needs a test: none may go unchecked."""
    kinds = {
        "gpt2np explain",
        "gpt2np plot",
        "gpt2np score",
        "gpt2np crosscheck",
        "gpt2np generate",
        "gpt2np random-model",
    }
    for command, _ in console_blocks():
        assert any(command.startswith(k) for k in kinds), f"no test re-runs `{command}`: add one to tests/test_docs.py"
    assert len(console_blocks()) >= 13


def test_the_page_makes_its_model_as_the_tests_do(tmp_path, model_dir, capsys):
    """The page's `gpt2np random-model weights/tiny ...` writes the test model "tiny", byte for byte,
    and prints what the page shows: a reader's numbers are the page's."""
    ((command, shown),) = [b for b in console_blocks() if b[0].startswith("gpt2np random-model")]
    args = shlex.split(command)[1:]
    assert args[1] == "weights/tiny"
    args[1] = str(tmp_path / "weights" / "tiny")
    assert main(args) == 0
    assert capsys.readouterr().out.replace(str(tmp_path) + "/", "") == shown
    built = tmp_path / "weights" / "tiny" / "model.safetensors"
    assert built.read_bytes() == (model_dir("tiny") / "model.safetensors").read_bytes()  # the same seed, the same bytes
    assert (tmp_path / "weights" / "tiny" / "config.json").read_text() == (
        model_dir("tiny") / "config.json"
    ).read_text()


def test_score_blocks(capsys, model_dir):
    blocks = [b for b in console_blocks() if b[0].startswith("gpt2np score")]
    assert blocks
    for command, shown in blocks:
        assert_same_output(shown, run_cli(capsys, command, model_dir), what=command)


def test_generate_blocks(capsys, model_dir):
    """Greedy and beam search with --logprobs: the same tokens and beams, log-probs to their last digit."""
    blocks = [b for b in console_blocks() if b[0].startswith("gpt2np generate")]
    assert len(blocks) >= 2 and any("--num-beams" in command for command, _ in blocks)
    for command, shown in blocks:
        assert_same_output(shown, run_cli(capsys, command, model_dir), what=command)


def test_plot_block_draws_the_picture_shown(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="gpt2np plot needs matplotlib (pip install -e '.[plot]')")
    import matplotlib.image

    ((command, shown),) = [b for b in console_blocks() if b[0].startswith("gpt2np plot")]
    args = shlex.split(command)[1:]
    out_dir = args[args.index("--out") + 1]
    args[args.index("--out") + 1] = str(tmp_path)
    assert main(args) == 0
    assert capsys.readouterr().out.replace(str(tmp_path), out_dir) == shown
    drawn, in_docs = (
        matplotlib.image.imread(tmp_path / "mask.png"),
        matplotlib.image.imread(ROOT / out_dir / "mask.png"),
    )
    assert drawn.shape == in_docs.shape and np.abs(drawn - in_docs).max() < 0.02  # the same picture (fonts may differ)


TOLERANCE_LINE = re.compile(r"fails above: logits (\S+); hidden states (\S+) x the layer's largest")
DIFFERENCE_ROW = re.compile(r"^  (embeddings|after block \d+|block \d+ \+ ln_f|logits) ")


def assert_same_crosscheck(shown: str, actual: str) -> None:
    """crosscheck's differences against transformers are rounding noise: which last bits two
    float32 (or float64) codes round differently changes with the BLAS kernel (a residual value
    of 303 has an ulp of 3e-5 in float32: one rounding either way moves a maximum from 1e-6 to
    3e-5). So a difference need not match the docs; both the docs' and the re-run's must be
    under the tolerance the table states (and 0 where the docs show 0: the embeddings are
    exact). Every other number (the largest |value|, counts, tolerances) must match."""
    assert NUMBER.sub("#", shown) == NUMBER.sub("#", actual), "docs/how-it-works.md shows stale crosscheck output"
    logits_tol = hidden_tol = None
    for a_line, b_line in zip(shown.splitlines(), actual.splitlines()):
        a_nums, b_nums = NUMBER.findall(a_line), NUMBER.findall(b_line)
        if (m := TOLERANCE_LINE.search(a_line)) is not None:
            logits_tol, hidden_tol = float(m.group(1)), float(m.group(2))
        row = DIFFERENCE_ROW.match(a_line)
        if row is None:
            assert_same_output(a_line, b_line, what="gpt2np crosscheck")
            continue
        a_nums, b_nums = a_nums[len(NUMBER.findall(row.group(1))) :], b_nums[len(NUMBER.findall(row.group(1))) :]
        if row.group(1) == "logits":
            differences, tol = list(zip(a_nums, b_nums)), logits_tol
        else:  # the last column is the layer's largest |value|, printed to its meaningful digits
            assert_same_output(a_nums[-1], b_nums[-1], what="gpt2np crosscheck")
            differences, tol = list(zip(a_nums[:-1], b_nums[:-1])), hidden_tol * float(a_nums[-1])
        for a, b in differences:
            assert (float(a) == 0) == (float(b) == 0), f"crosscheck: the docs show {a}, a re-run prints {b}: {a_line!r}"
            assert float(a) <= tol and float(b) <= tol, f"crosscheck: {a} / {b} above the tolerance {tol:g}: {a_line!r}"


def test_crosscheck_block(capsys, model_dir, transformers):
    ((command, shown),) = [b for b in console_blocks() if b[0].startswith("gpt2np crosscheck")]
    assert_same_crosscheck(shown, run_cli(capsys, command, model_dir))


def test_the_crosscheck_comparison_itself():
    ((_, shown),) = [b for b in console_blocks() if b[0].startswith("gpt2np crosscheck")]
    assert_same_crosscheck(shown, shown)
    row = next(line for line in shown.splitlines() if line.startswith("  after block 1"))
    largest = float(NUMBER.findall(row)[-1])
    for wrong in (f"{largest * 2e-5:.2e}", "0.00e+00"):  # above the tolerance; 0 where the docs have noise
        bad = row.replace(NUMBER.findall(row)[1], wrong, 1)
        with pytest.raises(AssertionError):
            assert_same_crosscheck(shown, shown.replace(row, bad))
    other = next(line for line in shown.splitlines() if "top-1 agree" in line)
    with pytest.raises(AssertionError):
        assert_same_crosscheck(shown, shown.replace(other, other.replace("16/16", "15/16", 1)))


@pytest.mark.parametrize(
    "shown, actual, ok",
    [
        ("-16.520 x", "-16.521 x", True),
        ("-16.520 x", "-16.522 x", False),
        ("2.992e+07", "2.993e+07", True),
        ("2.992e+07", "2.994e+07", False),
        ("3.05e-05", "6.1e-05", False),
        ("text 0:", "text 1:", False),
        ("a b", "a  b", False),
        ("16/16", "15/16", False),
    ],
)
def test_the_comparison_itself(shown, actual, ok):
    if ok:
        assert_same_output(shown, actual)
    else:
        with pytest.raises(AssertionError):
            assert_same_output(shown, actual)


# --- every relative link in the user docs points at a file that exists ------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def broken_links(page) -> list[str]:
    """The relative link targets of a markdown page that name no existing file or folder (code
    blocks and `inline code` are not read: they hold brackets that are not links)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    return broken


USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: links to files that do not exist"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](there.md) [ok too](there.md#a) ![up](../docs/there.md) [web](https://example.com) [here](#top)\n"
        "`[code](missing.md)` and\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) ![picture](img/missing.png) [folder up](there.md/../../nope.md)\n"
    )
    assert broken_links(page) == ["missing.md", "img/missing.png", "there.md/../../nope.md"]
