"""docs/training.md shows real output: the worked example's blocks are re-run and compared.

The page's `gpt2np random-model` makes the small model (in a temporary folder), its `gpt2np
train` trains it (into a temporary --out and --plot), and its `gpt2np generate` must give back
the paragraph exactly as the page shows it. The train block's text must match with its numbers
masked; its integers (parameters, tokens, windows, steps) exactly; its final loss, a float32
result after 80 steps whose last digits move with the BLAS kernel, within 20% (it is ~0.02
where the paragraph is learned, ~10 for a model that learned nothing).

The 124M block (three steps of the 124M shape: a minute of work and 3.5 GB) is not re-run
here; `python scripts/docs/refresh_docs.py --page training --check` re-runs it.
"""

from __future__ import annotations

import re
import shlex

from conftest import ROOT

from gpt2np.tools.cli import main

DOC = ROOT / "docs" / "training.md"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?")


def blocks() -> dict[str, tuple[list[str], str]]:
    """{first words of the command: (its arguments after `gpt2np`, the output shown)}."""
    found = {}
    for command, output in re.findall(r"```console\n\$ (.*?)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        args = shlex.split(command)[1:]
        found[f"{args[0]} {args[1] if args[0] == 'random-model' else args[2]}"] = (args, output)
    return found


def replaced(args: list[str], swap: dict[str, str]) -> list[str]:
    return [swap.get(a, a) for a in args]


def test_the_worked_example_prints_what_the_page_shows(tmp_path, capsys):
    shown = blocks()
    (make, made), (train, trained), (generate, generated) = (
        shown["random-model weights/small"],
        shown["train weights/small"],
        shown["generate runs/paragraph"],
    )
    swap = {
        "weights/small": str(tmp_path / "small"),
        "runs/paragraph": str(tmp_path / "paragraph"),
        "docs/img/training-loss.png": str(tmp_path / "loss.png"),
        "docs/paragraph.txt": str(ROOT / "docs" / "paragraph.txt"),
    }
    assert main(replaced(make, swap)) == 0
    assert capsys.readouterr().out.replace(swap["weights/small"], "weights/small") == made
    assert main(replaced(train, swap)) == 0
    out = capsys.readouterr().out
    for path, name in swap.items():
        out = out.replace(name, path)
    assert NUMBER.sub("#", out) == NUMBER.sub("#", trained), out
    for a, b in zip(NUMBER.findall(trained), NUMBER.findall(out)):
        if "." in a:
            assert abs(float(b) - float(a)) <= 0.2 * float(a), (a, b)
        else:
            assert a == b, (a, b)
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert main(replaced(generate, swap)) == 0
    assert capsys.readouterr().out == generated
    assert generated.strip() == (ROOT / "docs" / "paragraph.txt").read_text().strip()  # word for word


def test_the_pages_picture_was_drawn_by_gpt2np():
    from gpt2np.tools.plot import is_our_png

    assert is_our_png(ROOT / "docs" / "img" / "training-loss.png")
