"""The bad things scripts/docs/error_cases.py is written with: a temporary home (offline, its own
caches), a tiny good model and ways to break its files, a fake hub, and running the command line
in-process. Importing this module sets the environment up; scripts/docs/error_table.py does so.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # for the fake hub

TMP = Path(tempfile.mkdtemp(prefix="gpt2np-errors-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ.update(
    HF_HOME=str(TMP / "hf"), GPT2NP_WEIGHTS=str(TMP / "weights"), GPT2NP_CACHE=str(TMP / "cache"), HF_HUB_OFFLINE="1"
)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_ENDPOINT", None)

from gpt2np import (  # noqa: E402
    GPT2,
    GPT2Config,
    Tokenizer,
    hub,
)
from gpt2np.checkpoint import save_checkpoint  # noqa: E402
from gpt2np.tools.cli import main as cli_main  # noqa: E402
from gpt2np.tools.random_model import build_test_model, make_random_checkpoint, random_tensors  # noqa: E402
from gpt2np.weights import weights_from_tensors  # noqa: E402

TOKENIZER_DIR = hub.PACKAGED_TOKENIZER  # GPT-2's tokenizer, shipped inside the package
CONFIG = GPT2Config(vocab_size=100, n_positions=16, n_embd=8, n_layer=2, n_head=2, eos_token_id=99, bos_token_id=99)
MODEL = GPT2(CONFIG, weights_from_tensors(random_tensors(CONFIG, seed=0), CONFIG))
IDS = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
GOOD = make_random_checkpoint(TMP / "good", CONFIG)
T_INPUTS, T_CONFIG, T_CKPT, T_HUB, T_TOK, T_CLI, T_W, T_SFO = (
    f"test_{n}.py"
    for n in ("inputs", "config", "checkpoint", "hub", "tokenizer", "cli", "weights", "score_file_output")
)


# --- building bad things -----------------------------------------------------------------


def folder(name: str, model: bytes | None = None, config: str | dict | None = None, extra: dict | None = None) -> Path:
    """A model folder: GOOD's files unless replaced; None for model/config keeps GOOD's."""
    f = TMP / name
    f.mkdir(parents=True, exist_ok=True)
    (f / "model.safetensors").write_bytes((GOOD / "model.safetensors").read_bytes() if model is None else model)
    cfg = (GOOD / "config.json").read_text() if config is None else config
    (f / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    for filename, data in (extra or {}).items():
        (f / filename).write_bytes(data)
    return f


def without(f: Path, filename: str) -> Path:
    (f / filename).unlink()
    return f


def checkpoint_bytes(tensors: dict) -> bytes:
    path = TMP / "scratch.safetensors"
    save_checkpoint(path, tensors)
    return path.read_bytes()


def with_header(change) -> bytes:
    data = (GOOD / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header = change(header) or header
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def entry(name, **fields):
    def change(header):
        header[name].update(fields)

    return change


TENSORS = random_tensors(CONFIG, seed=0)
GOOD_BYTES = (GOOD / "model.safetensors").read_bytes()
N_HEADER = struct.unpack("<Q", GOOD_BYTES[:8])[0]


class Pickle:
    def __reduce__(self):
        return (print, ("this pickle ran",))


def hub_cache(repo_id: str, files: dict[str, bytes], blob_names: dict | None = None):
    from test_hub import add_to_hub_cache

    add_to_hub_cache(TMP / "hf", repo_id, files, blob_names)


@contextlib.contextmanager
def env(**values):
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@contextlib.contextmanager
def fake_hub(repos, corrupt=()):
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    from test_hub import FakeHub

    fake = FakeHub(repos, corrupt=set(corrupt))
    try:
        with (
            env(HF_ENDPOINT=fake.url, HF_HUB_OFFLINE=None),
            mock.patch.object(constants, "ENDPOINT", fake.url),
            mock.patch.object(
                constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"
            ),
            mock.patch.object(constants, "HF_HUB_OFFLINE", False),
            mock.patch.object(hf_api.api, "endpoint", fake.url),
        ):
            yield fake
    finally:
        fake.close()


def closed_port_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def tokenizer(side="right", pad=False) -> Tokenizer:
    tok = Tokenizer.from_pretrained(TOKENIZER_DIR)
    tok.padding_side = side
    if pad:
        tok.pad_token = tok.eos_token
    return tok


def cli(*argv):
    """Run the command line in-process; return (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


TINY = str(build_test_model("tiny", TMP / "test-models"))  # GPT-2's vocabulary: the real tokenizer fits
TOK = str(TOKENIZER_DIR)
MODEL_FILES = {f: (GOOD / f).read_bytes() for f in ("config.json", "model.safetensors")}


def within(context, call):
    with context:
        return call()


def known_file_wrong_sha():
    data = MODEL_FILES["model.safetensors"]
    hub_cache("acme/known", MODEL_FILES)
    with mock.patch.dict(hub.KNOWN_FILES, {("acme/known", "model.safetensors"): (len(data), "0" * 64)}):
        GPT2.from_pretrained("acme/known")


def damaged_blob():
    from test_hub import sha256

    damaged = bytearray(MODEL_FILES["model.safetensors"])
    damaged[-1] ^= 1
    hub_cache(
        "acme/damaged",
        {**MODEL_FILES, "model.safetensors": bytes(damaged)},
        blob_names={"model.safetensors": sha256(MODEL_FILES["model.safetensors"])},
    )
    GPT2.from_pretrained("acme/damaged")


class CliError(Exception):
    """The command line's stderr, raised so the table shows it; `cls` is what --debug raised."""

    def __init__(self, message: str, cls: str):
        super().__init__(message)
        self.cls = cls


def cli_error(*argv):
    code, err = cli(*argv)
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, (code, err)
    try:  # again with --debug, to see which exception it was
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            cli_main(["--debug", *argv])
        cls = "(none)"
    except BaseException as e:  # noqa: BLE001  SystemExit included: that is argparse's
        cls = type(e).__name__
    raise CliError(f"exit {code}: {err.strip()}", cls)


def cli_unexpected():
    import gpt2np.tools.generate

    def boom(args):
        raise RuntimeError("an example bug")

    with mock.patch.object(gpt2np.tools.generate, "load_model_and_tokenizer", boom):
        cli_error("generate", "x", "--model", TINY)


def cli_warning():
    import gpt2np.tools.generate

    def overflow(args):
        return np.float32(3e38) * np.float32(10)  # NumPy's RuntimeWarning: overflow encountered

    with mock.patch.object(gpt2np.tools.generate, "load_model_and_tokenizer", overflow):
        cli_error("generate", "x", "--model", TINY)


# --- `gpt2np score --file`: corpora and outputs ------------------------------------------------


def corpus(name: str, lines: list[str]) -> str:
    """A plain-text corpus in TMP, one text per line; returns its path."""
    path = TMP / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def scored(name: str, *flags: str) -> tuple[str, str]:
    """A corpus of 5 lines and the finished output of `score --file` on it: (corpus, out)."""
    src, out = (
        corpus(f"{name}.txt", ["My dog is", "The cat sat.", "It will rain", "Hi", "a b c d"]),
        str(TMP / f"{name}.jsonl"),
    )
    code, err = cli("score", "--file", src, "--out", out, "--model", TINY, "--tokenizer", TOK, "--no-progress", *flags)
    assert code == 0, err
    return src, out


def score_file_error(src: str, out: str, *flags: str):
    cli_error("score", "--file", src, "--out", out, "--model", TINY, "--tokenizer", TOK, "--no-progress", *flags)


def locked_out():
    """A second run on an --out whose lock another run holds."""
    from gpt2np.tools.score_file import output_lock

    src = corpus("locked.txt", ["My dog is"])
    with output_lock(str(TMP / "locked.jsonl")):
        score_file_error(src, str(TMP / "locked.jsonl"))


def resume_with_another_input():
    src, out = scored("edited")
    Path(src).write_text(Path(src).read_text().replace("The cat sat.", "The cat sat down."))
    score_file_error(src, out, "--resume")


def resume_without_sidecar():
    """--resume of a file of records that no sidecar describes."""
    src, out = corpus("nometa.txt", ["My dog is"]), TMP / "nometa.jsonl"
    out.write_text('{"line": 1, "n_tokens": 3}\n')
    score_file_error(src, str(out), "--resume")


def interrupted_part():
    """An OUT.part left by an interrupted run, and a run without --resume."""
    src = corpus("part.txt", ["My dog is"])
    (TMP / "part.jsonl.part").write_text('{"line": 1, "n_tokens": 3}\n')
    score_file_error(src, str(TMP / "part.jsonl"))


def tokenizer_folder(name: str, filename: str, content: str) -> Path:
    """GPT-2's tokenizer files with one of them replaced."""
    f = TMP / name
    shutil.copytree(TOKENIZER_DIR, f, dirs_exist_ok=True)
    if filename == "tokenizer.json":
        for other in ("vocab.json", "merges.txt"):
            (f / other).unlink()
    (f / filename).write_text(content)
    return f
