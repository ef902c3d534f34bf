"""The screenshots of `gpt2np page` in README.md and docs/how-it-works.md, remade from scratch.

    python scripts/docs/page_screenshots.py            # writes docs/img/page-*.png
    python scripts/docs/page_screenshots.py --out DIR

It makes the random model the README makes (`gpt2np random-model`), writes the seed batch's
page with `gpt2np page`, opens it in headless Chromium (Debian's chromium, driven by
Playwright: `apt-get install chromium`, `pip install -e '.[test]'`) and photographs it: the
attention grid with one head enlarged and a cell hovered, a pad's row under -inf, the logit lens
and the next token at temperature 0.7. Also prints the page's size for the 124M shape and 16 tokens
when that model is at hand (weights/test-models/gpt2-shaped, built by the tests).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = ["It will rain in the", "I want to eat a big bowl of", "My dog is"]
SIXTEEN = "The quick brown fox jumps over the lazy dog because it wanted to see the river"  # 16 GPT-2 tokens
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip


def gpt2np(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gpt2np", *args], check=True)


def between(tab, first: str, last: str) -> dict:
    """The page's region from the top of `first` to the bottom of `last`, in page coordinates."""
    top, bottom = tab.evaluate(
        "([a, b]) => [document.querySelector(a).getBoundingClientRect().top + window.scrollY,"
        " document.querySelector(b).getBoundingClientRect().bottom + window.scrollY]",
        [first, last],
    )
    return {"x": 0, "y": top - 6, "width": 1100, "height": bottom - top + 18}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        model, page = Path(tmp) / "small", Path(tmp) / "seed.html"
        gpt2np("random-model", str(model), "--n-layer", "2", "--n-head", "4", "--n-embd", "64", "--seed", "7")
        gpt2np("page", *SEED, "--model", str(model), "--out", str(page), "--mask-fill", "-inf")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
            tab = browser.new_page(viewport={"width": 1100, "height": 900})
            tab.goto(page.as_uri())
            shots = args.out
            shots.mkdir(parents=True, exist_ok=True)
            tab.click("canvas.head[data-li='1'][data-head='2']")
            tab.hover("#zoom td.cell[data-q='6'][data-k='4']")
            clip = between(tab, "#h-attention", "#zoom")
            tab.screenshot(path=str(shots / "page-attention.png"), full_page=True, clip=clip)
            tab.check("input[name='padview'][value='-inf']")
            tab.hover("#zoom td.cell[data-q='1'][data-k='0']")
            tab.screenshot(path=str(shots / "page-fills.png"), full_page=True, clip=clip)
            tab.mouse.move(0, 0)
            tab.eval_on_selector("#temp", "e => { e.value = 0.7; e.dispatchEvent(new Event('input')); }")
            clip = between(tab, "#h-lens", "#next")
            tab.screenshot(path=str(shots / "page-lens-next.png"), full_page=True, clip=clip)
            browser.close()
        for name in ("page-attention.png", "page-fills.png", "page-lens-next.png"):
            print(f"wrote {shots / name}")
        big = ROOT / "weights" / "test-models" / "gpt2-shaped"
        if big.is_dir():
            sized = Path(tmp) / "sixteen.html"
            gpt2np("page", SIXTEEN, "--model", str(big), "--out", str(sized))
            print(f"the 124M shape, one prompt of 16 tokens: {sized.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
