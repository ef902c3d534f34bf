"""Regenerate docs/errors.md: every bad input we know of, the error it gets, and its test.

    python scripts/error_table.py            # print the table
    python scripts/error_table.py --write    # rewrite docs/errors.md

Each row is a real run: the bad input is tried here (offline, in a temporary folder; the hub
download cases run against the local fake hub of tests/test_hub.py), and the message in the
table is the one that came out, with temporary paths shortened to "…/". A case that does not
raise the error class it is listed with stops the script: the table cannot drift silently.
Needs the GPT-2 tokenizer files (../shared/gpt2-tokenizer or $GPT2NP_TOKENIZER_DIR).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for the fake hub

TMP = Path(tempfile.mkdtemp(prefix="gpt2np-errors-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ.update(HF_HOME=str(TMP / "hf"), GPT2NP_WEIGHTS=str(TMP / "weights"), GPT2NP_CACHE=str(TMP / "cache"), HF_HUB_OFFLINE="1")
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_ENDPOINT", None)

from gpt2np import GPT2, CheckpointError, ConfigError, GPT2Config, InputError, ModelNotFoundError, Tokenizer  # noqa: E402
from gpt2np import hub  # noqa: E402
from gpt2np.checkpoint import save_checkpoint  # noqa: E402
from gpt2np.cli import main as cli_main  # noqa: E402
from gpt2np.random_model import build_test_model, make_random_checkpoint, random_tensors  # noqa: E402
from gpt2np.weights import weights_from_tensors  # noqa: E402

TOKENIZER_DIR = Path(os.environ.get("GPT2NP_TOKENIZER_DIR", ROOT.parent / "shared" / "gpt2-tokenizer"))
CONFIG = GPT2Config(vocab_size=100, n_positions=16, n_embd=8, n_layer=2, n_head=2, eos_token_id=99, bos_token_id=99)
MODEL = GPT2(CONFIG, weights_from_tensors(random_tensors(CONFIG, seed=0), CONFIG))
IDS = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
GOOD = make_random_checkpoint(TMP / "good", CONFIG)
T_INPUTS, T_CONFIG, T_CKPT, T_HUB, T_TOK, T_CLI, T_W = (f"test_{n}.py" for n in ("inputs", "config", "checkpoint", "hub", "tokenizer", "cli", "weights"))


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
        with env(HF_ENDPOINT=fake.url, HF_HUB_OFFLINE=None), \
             mock.patch.object(constants, "ENDPOINT", fake.url), \
             mock.patch.object(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"), \
             mock.patch.object(constants, "HF_HUB_OFFLINE", False), mock.patch.object(hf_api.api, "endpoint", fake.url):  # fmt: skip
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


# --- the cases: (bad input, expected error, how to trigger it, test) ---------------------

TINY = str(build_test_model("tiny", TMP / "test-models"))  # GPT-2's vocabulary: the real tokenizer fits
TOK = str(TOKENIZER_DIR)
MODEL_FILES = {f: (GOOD / f).read_bytes() for f in ("config.json", "model.safetensors")}

CASES = [
    ("Model", [
        ("unknown name, offline (HF_HUB_OFFLINE=1), not cached", ModelNotFoundError, lambda: GPT2.from_pretrained("no-such-model"),
         f"{T_HUB}::test_offline_and_not_cached_says_how_to_get_the_files"),
        ("any name, no network, not cached", ModelNotFoundError,
         lambda: _with(env(HF_HUB_OFFLINE=None, HF_ENDPOINT=closed_port_endpoint()), lambda: GPT2.from_pretrained("gpt2")),
         f"{T_HUB}::test_no_network_and_not_cached_says_how_to_get_the_files"),
        ("unknown name, hub reachable", ModelNotFoundError, lambda: _with(fake_hub({}), lambda: GPT2.from_pretrained("acme/nothing")),
         f"{T_HUB}::test_an_unknown_repo_on_a_reachable_hub"),
        ("a name that cannot be a hub repo id", ModelNotFoundError, lambda: GPT2.from_pretrained("bad name!"),
         f"{T_HUB}::test_a_name_that_cannot_be_a_repo"),
        ("a path that is not a folder", ModelNotFoundError, lambda: GPT2.from_pretrained(TMP / "nowhere"),
         f"{T_CKPT}::test_a_path_that_is_not_a_folder"),
        ("local folder without config.json", ModelNotFoundError, lambda: GPT2.from_pretrained(without(folder("nocfg"), "config.json")),
         f"{T_CKPT}::test_a_folder_without_config_json"),
        ("local folder without model.safetensors", ModelNotFoundError, lambda: GPT2.from_pretrained(without(folder("nost"), "model.safetensors")),
         f"{T_CKPT}::test_a_folder_without_model_safetensors"),
        ("local folder with only pytorch_model.bin", CheckpointError,
         lambda: GPT2.from_pretrained(without(folder("pkl", extra={"pytorch_model.bin": pickle.dumps(Pickle())}), "model.safetensors")),
         f"{T_CKPT}::test_a_folder_with_only_pytorch_model_bin_is_refused_unread"),
        ("cached hub repo with only pytorch_model.bin", CheckpointError,
         lambda: (hub_cache("acme/old", {"config.json": b"{}", "pytorch_model.bin": pickle.dumps(Pickle())}), GPT2.from_pretrained("acme/old")),
         f"{T_HUB}::test_a_cached_repo_with_only_pytorch_model_bin_is_refused_unread"),
        ("hub repo with only pytorch_model.bin", CheckpointError,
         lambda: _with(fake_hub({"acme/old2": {"config.json": b"{}", "pytorch_model.bin": b"x"}}), lambda: GPT2.from_pretrained("acme/old2")),
         f"{T_HUB}::test_a_hub_repo_with_only_pytorch_model_bin_is_refused"),
        ("`gpt2np download` offline", ModelNotFoundError, lambda: hub.download("gpt2", dest=TMP / "dl"),
         f"{T_HUB}::test_download_refuses_when_offline, {T_CLI}::test_download_offline_is_one_line"),
        ("`gpt2np download` without network", ModelNotFoundError,
         lambda: _with(env(HF_HUB_OFFLINE=None, HF_ENDPOINT=closed_port_endpoint()), lambda: hub.download("gpt2", dest=TMP / "dl")),
         f"{T_HUB}::test_download_without_network_says_so"),
    ]),
    ("Checkpoint", [
        ("file shorter than 8 bytes", CheckpointError, lambda: GPT2.from_pretrained(folder("short", GOOD_BYTES[:5])),
         f"{T_CKPT}::test_a_file_shorter_than_the_length_field"),
        ("file cut inside its header", CheckpointError, lambda: GPT2.from_pretrained(folder("cut-header", GOOD_BYTES[:40])),
         f"{T_CKPT}::test_a_file_cut_inside_its_header"),
        ("file cut inside its tensors (interrupted download)", CheckpointError, lambda: GPT2.from_pretrained(folder("cut", GOOD_BYTES[:-100])),
         f"{T_CKPT}::test_a_file_cut_inside_its_tensors"),
        ("corrupted header: not JSON", CheckpointError,
         lambda: GPT2.from_pretrained(folder("garbage", GOOD_BYTES[:8] + b"\xff" * N_HEADER + GOOD_BYTES[8 + N_HEADER :])),
         f"{T_CKPT}::test_a_garbage_header"),
        ("corrupted header: absurd length", CheckpointError, lambda: GPT2.from_pretrained(folder("huge", struct.pack("<Q", 2**62) + GOOD_BYTES[8:])),
         f"{T_CKPT}::test_an_absurd_header_length"),
        ("corrupted header: offsets disagree with shape/dtype", CheckpointError,
         lambda: GPT2.from_pretrained(folder("offsets", with_header(entry("transformer.ln_f.bias", shape=[9])))),
         f"{T_CKPT}::test_offsets_that_disagree_with_shape_and_dtype"),
        ("corrupted header: malformed entry", CheckpointError,
         lambda: GPT2.from_pretrained(folder("malformed", with_header(entry("transformer.ln_f.bias", shape="8")))),
         f"{T_CKPT}::test_a_malformed_header_entry"),
        ("a dtype gpt2np cannot read (e.g. F8_E4M3)", CheckpointError,
         lambda: GPT2.from_pretrained(folder("dtype", with_header(entry("transformer.ln_f.bias", dtype="F8_E4M3")))),
         f"{T_CKPT}::test_an_unknown_dtype_is_named"),
        ("integer weights", CheckpointError,
         lambda: GPT2.from_pretrained(folder("int", checkpoint_bytes({**TENSORS, "wpe.weight": np.zeros((16, 8), np.int64)}))),
         f"{T_CKPT}::test_integer_weights_written_by_safetensors_are_refused"),
        ("a missing tensor", CheckpointError,
         lambda: GPT2.from_pretrained(folder("missing", checkpoint_bytes({k: v for k, v in TENSORS.items() if k != "h.1.mlp.c_fc.bias"}))),
         f"{T_CKPT}::test_a_missing_tensor_is_named_with_its_shape"),
        ("a tensor of the wrong shape", CheckpointError,
         lambda: GPT2.from_pretrained(folder("shape", checkpoint_bytes({**TENSORS, "h.0.mlp.c_fc.weight": np.zeros((32, 8), np.float32)}))),
         f"{T_CKPT}::test_a_tensor_of_the_wrong_shape_is_named"),
        ("config.json not valid JSON", ConfigError, lambda: GPT2.from_pretrained(folder("badjson", config="{not json")),
         f"{T_CONFIG}::test_config_json_that_is_not_json"),
        ("config.json lacks a field", ConfigError, lambda: GPT2.from_pretrained(folder("lacks", config={"n_embd": 8, "n_layer": 2})),
         f"{T_CONFIG}::test_a_missing_required_field_is_named"),
        ("config.json holds an impossible value", ConfigError,
         lambda: GPT2.from_pretrained(folder("zero", config={**CONFIG.to_dict(), "n_layer": 0})),
         f"{T_CONFIG}::test_size_fields_must_be_positive_integers"),
        ('config.json boolean given as a string ("false")', ConfigError,
         lambda: GPT2.from_pretrained(folder("boolstr", config={**CONFIG.to_dict(), "tie_word_embeddings": "false"})),
         f"{T_CONFIG}::test_boolean_fields_must_be_booleans"),
        ("config.json of another architecture", ConfigError,
         lambda: GPT2.from_pretrained(folder("llama", config={**CONFIG.to_dict(), "model_type": "llama"})),
         f"{T_CONFIG}::test_another_architecture_is_refused"),
        ("config n_embd disagrees with the tensors", CheckpointError,
         lambda: GPT2.from_pretrained(folder("n_embd", config={**CONFIG.to_dict(), "n_embd": 16})),
         f"{T_CKPT}::test_config_values_that_disagree_with_the_tensors, {T_W}::test_config_disagreeing_with_tensors_is_reported_as_such"),
        ("config vocab_size disagrees with the tensors", CheckpointError,
         lambda: GPT2.from_pretrained(folder("vocab", config={**CONFIG.to_dict(), "vocab_size": 50257})),
         f"{T_CKPT}::test_config_values_that_disagree_with_the_tensors"),
        ("config n_layer disagrees with the tensors", CheckpointError,
         lambda: GPT2.from_pretrained(folder("n_layer", config={**CONFIG.to_dict(), "n_layer": 3})),
         f"{T_CKPT}::test_config_values_that_disagree_with_the_tensors"),
        ("config n_positions disagrees with the tensors", CheckpointError,
         lambda: GPT2.from_pretrained(folder("n_pos", config={**CONFIG.to_dict(), "n_positions": 32})),
         f"{T_CKPT}::test_config_sizes_the_tensors_contradict"),
    ]),
    ("Integrity (skip with verify=False / --no-verify)", [
        ("gpt2's model.safetensors of the wrong size (checked against 548105171 bytes)", CheckpointError,
         lambda: (hub_cache("gpt2", MODEL_FILES), GPT2.from_pretrained("gpt2")),
         f"{T_HUB}::test_a_cached_gpt2_that_is_not_the_official_file_is_refused"),
        ("a known file (gpt2 weights, tokenizer files) with the wrong sha256", CheckpointError,
         lambda: _known_file_wrong_sha(), f"{T_HUB}::test_known_file_sizes_and_hashes_are_enforced, {T_HUB}::test_a_changed_tokenizer_file_is_refused"),
        ("hub cache blob whose content does not match its sha256 name", CheckpointError, lambda: _damaged_blob(),
         f"{T_HUB}::test_a_blob_whose_content_does_not_match_its_name_is_refused"),
        ("download damaged on the way (bytes do not match the hub's sha256)", CheckpointError,
         lambda: _with(fake_hub({"acme/tiny": MODEL_FILES}, corrupt={"model.safetensors"}), lambda: hub.download("acme/tiny", dest=TMP / "dmg")),
         f"{T_HUB}::test_download_refuses_a_file_damaged_on_the_way, {T_CLI}::test_download_damaged_on_the_way_is_refused_unless_no_verify"),
    ]),
    ("Tokens", [
        ("id < 0", InputError, lambda: MODEL([[5, -1]]), f"{T_INPUTS}::test_out_of_vocabulary_ids_are_refused"),
        ("id >= vocab size", InputError, lambda: MODEL([[5, 100]]), f"{T_INPUTS}::test_out_of_vocabulary_ids_are_refused"),
        ("non-integer ids (floats, bools, strings)", InputError, lambda: MODEL([[1.0, 2.0]]), f"{T_INPUTS}::test_non_integer_ids_are_refused"),
        ("ids of rank 0 or 3 (1-D is accepted as one sequence, as transformers)", InputError, lambda: MODEL(np.zeros((1, 2, 3), int)),
         f"{T_INPUTS}::test_ids_of_the_wrong_rank_are_refused, {T_INPUTS}::test_one_dimensional_ids_are_one_sequence_and_the_batch_axis_is_dropped"),
        ("ragged ids", InputError, lambda: MODEL([[1, 2, 3], [4]]), f"{T_INPUTS}::test_ragged_ids_are_refused_with_the_padding_recipe"),
        ("empty prompt", InputError, lambda: MODEL.generate([], max_new_tokens=1), f"{T_INPUTS}::test_an_empty_prompt_is_refused_as_empty"),
        ("empty prompt (command line)", InputError, lambda: _cli_error("generate", "", "--model", TINY, "--tokenizer", TOK),
         f"{T_CLI}::test_an_empty_prompt"),
    ]),
    ("Masks", [
        ("attention_mask of another shape", InputError, lambda: MODEL(IDS, attention_mask=np.ones((2, 3))),
         f"{T_INPUTS}::test_a_mask_of_another_shape_is_refused"),
        ("mask values other than 0/1", InputError, lambda: MODEL(IDS, attention_mask=[[1, 1, 2, 1], [1, 1, 1, 1]]),
         f"{T_INPUTS}::test_mask_values_other_than_0_and_1_are_refused"),
        ("a row with no 1", InputError, lambda: MODEL(IDS, attention_mask=[[1, 1, 1, 1], [0, 0, 0, 0]]),
         f"{T_INPUTS}::test_a_row_with_no_real_token_is_refused"),
        ("right padding given to generate (refused; transformers only warns)", InputError,
         lambda: MODEL.generate(IDS, attention_mask=[[1, 1, 1, 0], [1, 1, 1, 1]], max_new_tokens=1),
         f"{T_INPUTS}::test_right_padding_is_refused_by_generate"),
    ]),
    ("Length", [
        ("input past n_positions", InputError, lambda: MODEL(np.arange(17)[None]), f"{T_INPUTS}::test_an_input_longer_than_n_positions_is_refused"),
        ("prompt + new tokens past n_positions", InputError, lambda: MODEL.generate(np.arange(10)[None], max_new_tokens=7),
         f"{T_INPUTS}::test_prompt_plus_new_tokens_past_n_positions_is_refused"),
    ]),
    ("Generation settings", [
        ("temperature <= 0 with sampling", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample=True, temperature=0),
         f"{T_INPUTS}::test_a_non_positive_temperature_is_refused_when_sampling"),
        ("top_p outside (0, 1]", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, top_p=1.5),
         f"{T_INPUTS}::test_top_p_outside_0_1_is_refused"),
        ("top_k < 0", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, top_k=-1), f"{T_INPUTS}::test_a_negative_or_non_integer_top_k_is_refused"),
        ("max_new_tokens < 1", InputError, lambda: MODEL.generate(IDS, max_new_tokens=0),
         f"{T_INPUTS}::test_max_new_tokens_below_1_or_not_an_integer_is_refused"),
        ("max_length not above the prompt length", InputError, lambda: MODEL.generate(IDS, max_length=4), f"{T_INPUTS}::test_max_length_must_exceed_the_prompt"),
        ("do_sample not a boolean", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample="no"), f"{T_INPUTS}::test_do_sample_must_be_a_boolean"),
        ("eos_token_id / pad_token_id outside the vocabulary", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, pad_token_id=100),
         f"{T_INPUTS}::test_eos_and_pad_ids_must_be_token_ids"),
        ("mask_fill positive", InputError, lambda: GPT2(CONFIG, MODEL.weights, mask_fill=1.0), f"{T_INPUTS}::test_a_positive_or_zero_mask_fill_is_refused"),
        ("mask_fill zero", InputError, lambda: GPT2(CONFIG, MODEL.weights, mask_fill=0), f"{T_INPUTS}::test_a_positive_or_zero_mask_fill_is_refused"),
        ("mask_fill NaN", InputError, lambda: GPT2(CONFIG, MODEL.weights, mask_fill=float("nan")), f"{T_INPUTS}::test_a_nan_mask_fill_is_refused"),
        ("mask_fill an unknown string", InputError, lambda: GPT2(CONFIG, MODEL.weights, mask_fill="bogus"),
         f"{T_INPUTS}::test_an_unknown_mask_fill_string_is_refused"),
        ("mask_fill too large for the dtype", InputError, lambda: GPT2(CONFIG, MODEL.weights, mask_fill=-1e39),
         f"{T_INPUTS}::test_a_mask_fill_too_large_for_the_dtype_is_refused"),
        ("dtype other than float32/float64 (from_pretrained)", InputError, lambda: GPT2.from_pretrained(GOOD, dtype="float16"),
         f"{T_INPUTS}::test_from_pretrained_checks_mask_fill_and_dtype_before_any_file_work"),
    ]),
    ("Tokenizer", [
        ("padding requested without a pad token", InputError, lambda: tokenizer()(["a", "b c"], padding=True),
         f"{T_TOK}::test_padding_without_a_pad_token"),
        ("an unknown padding side", InputError, lambda: setattr(tokenizer(), "padding_side", "middle"), f"{T_TOK}::test_an_unknown_padding_side"),
        ("a pad token outside the vocabulary", InputError, lambda: setattr(tokenizer(), "pad_token", "<pad>"),
         f"{T_TOK}::test_a_pad_token_outside_the_vocabulary"),
        ("texts of different lengths without padding", InputError, lambda: tokenizer()(["a", "b c"]), f"{T_TOK}::test_ragged_texts_without_padding"),
        ('padding="max_length" shorter than a text', InputError,
         lambda: tokenizer(pad=True)(["It will rain in the"], padding="max_length", max_length=2),
         f"{T_TOK}::test_max_length_padding_refuses_a_longer_text_unless_truncating"),
        ("decode given a batch", InputError, lambda: tokenizer().decode([[1, 2]]), f"{T_TOK}::test_decode_errors"),
    ]),
    ("Command line (one line on stderr, no traceback unless --debug)", [
        ("a bad flag or a value of the wrong type (exit 2)", SystemExit, lambda: _cli_error("generate", "x", "--max-new-tokens", "abc"),
         f"{T_CLI}::test_bad_flags_are_one_line_and_exit_2"),
        ("a bad value (exit 1)", InputError, lambda: _cli_error("generate", "x", "--model", TINY, "--tokenizer", TOK, "--top-p", "2"),
         f"{T_CLI}::test_bad_values"),
        ("a model that is not there (exit 1)", ModelNotFoundError, lambda: _cli_error("generate", "x", "--model", "no-such-model"),
         f"{T_CLI}::test_an_unknown_model_offline"),
        ("a tokenizer larger than the model's vocabulary", InputError,
         lambda: _cli_error("generate", "x", "--model", str(GOOD), "--tokenizer", TOK), f"{T_CLI}::test_a_tokenizer_larger_than_the_model"),
        ("any other exception (a bug) (exit 1)", RuntimeError, lambda: _cli_unexpected(), f"{T_CLI}::test_an_unexpected_exception_is_still_one_line"),
    ]),
]  # fmt: skip


def _with(context, call):
    with context:
        return call()


def _known_file_wrong_sha():
    data = MODEL_FILES["model.safetensors"]
    hub_cache("acme/known", MODEL_FILES)
    with mock.patch.dict(hub.KNOWN_FILES, {("acme/known", "model.safetensors"): (len(data), "0" * 64)}):
        GPT2.from_pretrained("acme/known")


def _damaged_blob():
    from test_hub import sha256

    damaged = bytearray(MODEL_FILES["model.safetensors"])
    damaged[-1] ^= 1
    hub_cache("acme/damaged", {**MODEL_FILES, "model.safetensors": bytes(damaged)},
              blob_names={"model.safetensors": sha256(MODEL_FILES["model.safetensors"])})  # fmt: skip
    GPT2.from_pretrained("acme/damaged")


class CliError(Exception):
    """The command line's stderr, raised so the table shows it; `cls` is what --debug raised."""

    def __init__(self, message: str, cls: str):
        super().__init__(message)
        self.cls = cls


def _cli_error(*argv):
    code, err = cli(*argv)
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, (code, err)
    try:  # again with --debug, to see which exception it was
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            cli_main(["--debug", *argv])
        cls = "(none)"
    except BaseException as e:  # noqa: BLE001  SystemExit included: that is argparse's
        cls = type(e).__name__
    raise CliError(f"exit {code}: {err.strip()}", cls)


def _cli_unexpected():
    import gpt2np.cli

    def boom(args):
        raise RuntimeError("an example bug")

    with mock.patch.object(gpt2np.cli, "load_model_and_tokenizer", boom):
        _cli_error("generate", "x", "--model", TINY)


def run_case(expected, call) -> tuple[str, str]:
    """-> (error class shown, message)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            call()
        except CliError as e:
            if e.cls != expected.__name__:
                raise SystemExit(f"error_table.py: expected {expected.__name__}, the command line raised {e.cls}: {e}") from None
            return e.cls, str(e)
        except expected as e:
            return type(e).__name__, str(e)
    raise SystemExit(f"error_table.py: expected {expected.__name__}, but nothing was raised")


def cell(text: str, limit: int = 330) -> str:
    text = text.replace(str(TMP) + "/", "…/").replace(str(TMP), "…").replace(str(TOKENIZER_DIR), "<tokenizer>")
    text = " ".join(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("|", "\\|").replace("`", "'")


HEADER = """# Bad inputs and the errors they get

Every error gpt2np raises on purpose is a subclass of `gpt2np.GPT2npError`; the ones about
bad arguments (`InputError`, `ConfigError`) are also `ValueError`s. Each message says what is
wrong and how to fix it. From the command line the same message is one line on stderr with a
non-zero exit (2 for a malformed command line, 1 for anything else), and no traceback unless
`--debug` is given (before or after the subcommand).

Choices made:
- 1-D `input_ids` are one sequence (as in transformers' forward); the outputs then drop the batch axis.
- Right padding given to `generate` is refused (transformers warns and then generates from a pad position).
- `mask_fill` is `"-inf"`, `"-1e9"`, `"min"` (transformers' choice, the default) or a negative number.
- Known files (gpt2's model.safetensors: 548105171 bytes, sha256 248dfc39…a707; the tokenizer's
  vocab.json and merges.txt) and every large file whose sha256 the hub announced are checked
  once, after download or on first use; the result is remembered, so the next load does not
  hash again. `verify=False` / `--no-verify` skips the check.
- Pickle files (`pytorch_model.bin`) are never opened.

Generated by `python scripts/error_table.py --write` from real runs; messages are abridged
(temporary paths shortened to `…/`).
"""


def build_table() -> str:
    lines = [HEADER]
    for group, cases in CASES:
        lines += [f"\n## {group}\n", "| bad input | error | message | test |", "| --- | --- | --- | --- |"]
        for what, expected, call, test in cases:
            name, message = run_case(expected, call)
            tests = ", ".join(f"`tests/{t.strip()}`" for t in test.split(","))
            lines.append(f"| {what} | `{name}` | {cell(message)} | {tests} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/errors.md")
    args = parser.parse_args()
    table = build_table()
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "errors.md").write_text(table)
        print(f"wrote {ROOT / 'docs' / 'errors.md'}")
    else:
        sys.stdout.write(table)
