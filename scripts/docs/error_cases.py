"""Every bad input we know of: (what, the error class it must raise, how to trigger it, the test
that covers it), in groups. scripts/docs/error_table.py runs each and writes docs/errors.md.
The helpers and fixtures (folder, with_header, cli_error, TINY, ...) are in error_fixtures.py.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import struct

import numpy as np
from error_fixtures import (  # sets up an offline temporary home first; the vocabulary the cases are written in
    CONFIG,
    GOOD,
    GOOD_BYTES,
    IDS,
    MODEL,
    MODEL_FILES,
    N_HEADER,
    T_CKPT,
    T_CLI,
    T_CONFIG,
    T_HUB,
    T_INPUTS,
    T_SFO,
    T_TOK,
    T_W,
    TENSORS,
    TINY,
    TMP,
    TOK,
    Pickle,
    checkpoint_bytes,
    cli_error,
    cli_unexpected,
    cli_warning,
    closed_port_endpoint,
    corpus,
    damaged_blob,
    entry,
    env,
    fake_hub,
    folder,
    hub_cache,
    interrupted_part,
    known_file_wrong_sha,
    locked_out,
    resume_with_another_input,
    resume_without_sidecar,
    score_file_error,
    scored,
    tokenizer,
    tokenizer_folder,
    with_header,
    within,
    without,
)

from gpt2np import (
    GPT2,
    CheckpointError,
    ConfigError,
    GPT2Config,
    GPT2npError,
    InputError,
    ModelError,
    ModelNotFoundError,
    Tokenizer,
    hub,
)
from gpt2np.ray import actor_cpus, check_arguments
from gpt2np.tools.cli import main as cli_main
from gpt2np.tools.random_model import random_tensors
from gpt2np.weights import weights_from_tensors

T_GEN = f"{T_INPUTS}::test_bad_generation_settings_are_refused_by_name"
T_LABELS = "test_backward.py::test_bad_labels_are_our_errors"
T_LLMC_BAD = "test_llmc.py::test_bad_model_files_are_our_errors"


def llmc_file(name: str, header: dict | None = None, cut: int = 0) -> str:
    """MODEL written as an llm.c model file, with some header ints replaced and `cut` bytes cut off."""
    from gpt2np.llmc import write_model

    path = TMP / name
    write_model(path, MODEL.weights, CONFIG)
    data = bytearray(path.read_bytes())
    for index, value in (header or {}).items():
        data[4 * index : 4 * index + 4] = struct.pack("<i", value)
    path.write_bytes(bytes(data[: len(data) - cut]))
    return str(path)


def odd_model() -> str:
    """A random model llm.c cannot run: untied, an MLP of 20, scores also divided by the layer index."""
    from gpt2np.tools.random_model import make_random_checkpoint

    config = GPT2Config(vocab_size=100, n_positions=16, n_embd=8, n_layer=1, n_head=2, n_inner=20,
                        tie_word_embeddings=False, scale_attn_by_inverse_layer_idx=True, eos_token_id=99, bos_token_id=99)  # fmt: skip
    return str(make_random_checkpoint(TMP / "odd-model", config, seed=0))


# more token ids than GPT-2's tokenizer has
BIG_VOCAB = GPT2Config(vocab_size=60000, n_positions=16, n_embd=8, n_layer=1, n_head=2)


def overflowing_model():
    """The tiny model with ln_f's scale at 3e38: finite, but its logits overflow float32 to inf or NaN."""
    import dataclasses

    from gpt2np.weights import LayerNorm

    w = MODEL.weights
    return GPT2(CONFIG, dataclasses.replace(w, ln_f=LayerNorm(np.full_like(w.ln_f.weight, 3e38), w.ln_f.bias)))


def reference_with(name: str, extra: dict | None = None, **metadata) -> str:
    """A trace of MODEL on IDS (with `extra` tensors), saved with some metadata fields replaced: a
    malformed reference."""
    from gpt2np.tools.trace import trace_metadata, trace_tensors
    from gpt2np.tools.tracefile import save_trace

    path = TMP / f"{name}.safetensors"
    tensors = trace_tensors(MODEL, IDS, np.ones_like(IDS))
    save_trace(path, {**tensors, **(extra or {})}, {**trace_metadata(MODEL, "m", None, []), **metadata})
    return str(path)


def crafted_blocks() -> str:
    """A reference naming blocks.99999999999.hook_resid_pre (compare once built 10^11 names for it)."""
    return reference_with("crafted", extra={"blocks.99999999999.hook_resid_pre": np.zeros((2, 4, 8), np.float32)})


def tiny_copy(name: str) -> str:
    """A copy of the tiny test model (GPT-2's vocabulary) that a case may try to overwrite."""
    import shutil

    shutil.copytree(TINY, TMP / name, dirs_exist_ok=True)
    return str(TMP / name)


def user_file(name: str, text: str = "the user's own notes\n") -> str:
    (TMP / name).write_text(text)
    return str(TMP / name)


TRAIN_TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 8
T_TRAIN = "test_train_command.py"


def train_data(name: str, data: bytes | None = None) -> str:
    """A data file for `gpt2np train` in TMP (None: none at all); returns its path."""
    if data is not None:
        (TMP / name).write_bytes(data)
    return str(TMP / name)


def train(out: str, *flags: str, data: str | None = None) -> None:
    """`gpt2np train` of the tiny model, 2 short steps, expected to fail (cli_error)."""
    data = data or train_data("train.txt", TRAIN_TEXT.encode())
    cli_error("train", "--model", TINY, "--data", data, "--out", str(TMP / out), "--steps", "2", "--seq-len", "16",
              "--batch-size", "1", "--val-split", "0", *flags)  # fmt: skip


def trained(out: str) -> str:
    """The finished output of a 2-step `gpt2np train` (to --resume)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli_main(["train", "--model", TINY, "--data", train_data("train.txt", TRAIN_TEXT.encode()), "--out", str(TMP / out),
                  "--steps", "2", "--seq-len", "16", "--batch-size", "1", "--val-split", "0"])  # fmt: skip
    return out


def llmc_tokens(name: str, ids: list[int]) -> str:
    from gpt2np.llmc import write_tokens

    write_tokens(TMP / name, np.array(ids))
    return str(TMP / name)


def user_folder(name: str) -> str:
    """A folder holding the user's own config.json."""
    (TMP / name).mkdir(exist_ok=True)
    (TMP / name / "config.json").write_text('{"my": "own config"}')
    return str(TMP / name)


def symlink_to(name: str, target: str) -> str:
    link = TMP / name
    if not link.is_symlink():
        link.symlink_to(target)
    return str(link)


def overlapping(header):
    header["transformer.h.0.ln_2.weight"]["data_offsets"] = header["transformer.h.0.ln_1.weight"]["data_offsets"]


def sidecar_edited(name: str):
    """A finished `score --file` run whose sidecar was edited to "lines": -5, then --resume."""
    import json

    src, out = scored(name)
    meta = TMP / f"{name}.jsonl.meta.json"
    data = json.loads(meta.read_text())
    data["done"]["lines"] = -5
    meta.write_text(json.dumps(data))
    score_file_error(src, out, "--resume")


T_OW = "test_overwrite.py"

CASES = [
    ("Model", [
        ("unknown name, offline (HF_HUB_OFFLINE=1), not cached", ModelNotFoundError, lambda: GPT2.from_pretrained("no-such-model"),
         f"{T_HUB}::test_offline_and_not_cached_says_how_to_get_the_files"),
        ("any name, no network, not cached", ModelNotFoundError,
         lambda: within(env(HF_HUB_OFFLINE=None, HF_ENDPOINT=closed_port_endpoint()), lambda: GPT2.from_pretrained("gpt2")),
         f"{T_HUB}::test_no_network_and_not_cached_says_how_to_get_the_files"),
        ("unknown name, hub reachable", ModelNotFoundError, lambda: within(fake_hub({}), lambda: GPT2.from_pretrained("acme/nothing")),
         f"{T_HUB}::test_an_unknown_repo_on_a_reachable_hub"),
        ("a name that cannot be a hub repo id", ModelNotFoundError, lambda: GPT2.from_pretrained("bad name!"),
         f"{T_HUB}::test_a_name_that_cannot_be_a_repo"),
        ("a path that is not a folder", ModelNotFoundError, lambda: GPT2.from_pretrained(TMP / "nowhere"),
         f"{T_CKPT}::test_a_path_that_is_not_a_folder"),
        ("a mistyped relative folder (`test-models/tni` where ./test-models exists): not sent to the hub", ModelNotFoundError,
         lambda: within(contextlib.chdir(TMP), lambda: GPT2.from_pretrained("test-models/tni")),
         f"{T_HUB}::test_a_name_that_looks_like_a_folder_is_not_sent_to_the_hub"),
        ("a file given as the model folder", ModelNotFoundError, lambda: GPT2.from_pretrained(str(GOOD / "model.safetensors")),
         f"{T_HUB}::test_a_file_given_as_the_model_folder, {T_CKPT}::test_a_path_that_is_not_a_folder"),
        ("local folder without config.json", ModelNotFoundError, lambda: GPT2.from_pretrained(without(folder("nocfg"), "config.json")),
         f"{T_CKPT}::test_a_folder_without_config_json"),
        ("local folder without model.safetensors", ModelNotFoundError, lambda: GPT2.from_pretrained(without(folder("nost"), "model.safetensors")),
         f"{T_CKPT}::test_a_folder_without_model_safetensors"),
        ("local folder with only pytorch_model.bin", CheckpointError,
         lambda: GPT2.from_pretrained(without(folder("pkl", extra={"pytorch_model.bin": pickle.dumps(Pickle())}), "model.safetensors")),
         f"{T_CKPT}::test_a_folder_with_only_pytorch_model_bin_is_refused_unread"),
        ("local folder with only pytorch_model.bin, from the command line (the model is resolved before its tokenizer)", CheckpointError,
         lambda: cli_error("generate", "x", "--model", str(without(folder("pkl-cli", extra={"pytorch_model.bin": pickle.dumps(Pickle())}), "model.safetensors"))),
         f"{T_CLI}::test_the_model_folder_is_checked_before_its_tokenizer"),
        ("cached hub repo with only pytorch_model.bin", CheckpointError,
         lambda: (hub_cache("acme/old", {"config.json": b"{}", "pytorch_model.bin": pickle.dumps(Pickle())}), GPT2.from_pretrained("acme/old")),
         f"{T_HUB}::test_a_cached_repo_with_only_pytorch_model_bin_is_refused_unread"),
        ("hub repo with only pytorch_model.bin", CheckpointError,
         lambda: within(fake_hub({"acme/old2": {"config.json": b"{}", "pytorch_model.bin": b"x"}}), lambda: GPT2.from_pretrained("acme/old2")),
         f"{T_HUB}::test_a_hub_repo_with_only_pytorch_model_bin_is_refused"),
        ("`gpt2np download` offline", ModelNotFoundError, lambda: hub.download("gpt2", dest=TMP / "dl"),
         f"{T_HUB}::test_download_refuses_when_offline, {T_CLI}::test_download_offline_is_one_line"),
        ("`gpt2np download` without network", ModelNotFoundError,
         lambda: within(env(HF_HUB_OFFLINE=None, HF_ENDPOINT=closed_port_endpoint()), lambda: hub.download("gpt2", dest=TMP / "dl")),
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
        ("corrupted header: a shape whose size overflows int64 (e.g. [2**62, 2**62])", CheckpointError,
         lambda: GPT2.from_pretrained(folder("overflow", with_header(entry("transformer.ln_f.bias", shape=[2**62, 2**62], data_offsets=[0, 0])))),
         f"{T_CKPT}::test_offsets_that_disagree_with_shape_and_dtype"),
        ("a dtype gpt2np cannot read (e.g. F8_E4M3)", CheckpointError,
         lambda: GPT2.from_pretrained(folder("dtype", with_header(entry("transformer.ln_f.bias", dtype="F8_E4M3")))),
         f"{T_CKPT}::test_an_unknown_dtype_is_named"),
        ("corrupted header: two tensors' byte ranges overlap (ln_2.weight reading ln_1.weight's bytes)", CheckpointError,
         lambda: GPT2.from_pretrained(folder("overlap", with_header(overlapping))),
         f"{T_CKPT}::test_tensors_whose_bytes_overlap_are_refused"),
        ("integer weights", CheckpointError,
         lambda: GPT2.from_pretrained(folder("int", checkpoint_bytes({**TENSORS, "wpe.weight": np.zeros((16, 8), np.int64)}))),
         f"{T_CKPT}::test_integer_weights_written_by_safetensors_are_refused"),
        ("a missing tensor", CheckpointError,
         lambda: GPT2.from_pretrained(folder("missing", checkpoint_bytes({k: v for k, v in TENSORS.items() if k != "h.1.mlp.c_fc.bias"}))),
         f"{T_CKPT}::test_a_missing_tensor_is_named_with_its_shape"),
        ("a tensor of the wrong shape", CheckpointError,
         lambda: GPT2.from_pretrained(folder("shape", checkpoint_bytes({**TENSORS, "h.0.mlp.c_fc.weight": np.zeros((32, 8), np.float32)}))),
         f"{T_CKPT}::test_a_tensor_of_the_wrong_shape_is_named"),
        ("a NaN or inf in a weight (damaged download, bad conversion)", CheckpointError,
         lambda: GPT2.from_pretrained(folder("nan", checkpoint_bytes({**TENSORS, "h.1.attn.c_attn.bias": np.where(np.arange(24) == 5, np.nan, TENSORS["h.1.attn.c_attn.bias"]).astype(np.float32)}))),
         f"{T_CKPT}::test_a_nan_or_inf_in_a_weight_is_refused_and_the_tensor_named, {T_CLI}::test_weights_with_a_nan_are_refused_by_every_command"),
        ("a float64 weight beyond float32's range, loaded as float32", CheckpointError,
         lambda: GPT2.from_pretrained(folder("big", checkpoint_bytes({**{k: v.astype(np.float64) for k, v in TENSORS.items()}, "wpe.weight": np.full((16, 8), 1e39)}))),
         f"{T_CKPT}::test_a_float64_value_too_large_for_float32_is_refused_as_float32_only"),
        ('config.json says "tie_word_embeddings": false, the checkpoint is tied', CheckpointError,
         lambda: GPT2.from_pretrained(folder("untied", config={**CONFIG.to_dict(), "tie_word_embeddings": False})),
         f"{T_W}::test_untied_config_on_a_tied_checkpoint_points_at_the_setting"),
        ("config.json eos_token_id outside the vocabulary", ConfigError,
         lambda: GPT2.from_pretrained(folder("eos", config={**CONFIG.to_dict(), "eos_token_id": 100})),
         f"{T_CONFIG}::test_an_eos_token_id_outside_the_vocabulary_is_refused_at_load_naming_the_file"),
        ("config.json not valid JSON", ConfigError, lambda: GPT2.from_pretrained(folder("badjson", config="{not json")),
         f"{T_CONFIG}::test_config_json_that_is_not_json"),
        ("config.json empty", ConfigError, lambda: GPT2.from_pretrained(folder("emptycfg", config="")),
         f"{T_CONFIG}::test_an_empty_config_json_is_called_empty"),
        ("config.json holding a list, not an object (also when only the tokenizer is asked for)", ConfigError,
         lambda: Tokenizer.from_pretrained(without(folder("listcfg", config="[50257]"), "model.safetensors")),
         f"{T_CONFIG}::test_config_json_that_is_not_an_object, {T_HUB}::test_a_broken_config_json_is_reported_as_broken_not_as_missing"),
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
         lambda: known_file_wrong_sha(), f"{T_HUB}::test_known_file_sizes_and_hashes_are_enforced, {T_HUB}::test_a_changed_tokenizer_file_is_refused"),
        ("hub cache blob whose content does not match its sha256 name", CheckpointError, lambda: damaged_blob(),
         f"{T_HUB}::test_a_blob_whose_content_does_not_match_its_name_is_refused"),
        ("download damaged on the way (bytes do not match the hub's sha256)", CheckpointError,
         lambda: within(fake_hub({"acme/tiny": MODEL_FILES}, corrupt={"model.safetensors"}), lambda: hub.download("acme/tiny", dest=TMP / "dmg")),
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
        ("empty prompt (command line)", InputError, lambda: cli_error("generate", "", "--model", TINY, "--tokenizer", TOK),
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
    ("Labels (the loss: `labels=`, `loss_and_grads`)", [
        ("labels of another shape than input_ids", InputError, lambda: MODEL.loss_and_grads(IDS, labels=IDS[:, :2]), T_LABELS),
        ("a label that is neither a token id nor -100", InputError, lambda: MODEL(IDS, labels=np.full(IDS.shape, -1)), T_LABELS),
        ("no label counted (one token per row: nothing predicts anything)", InputError,
         lambda: MODEL.loss_and_grads(IDS[:, :1]), T_LABELS),
        ("labels with logits_to_keep", InputError, lambda: MODEL(IDS, labels=IDS, logits_to_keep=1), T_LABELS),
    ]),
    ("llm.c's files (`gpt2np llmc`, `GPT2.from_pretrained(\"model.bin\")`)", [
        ("a file that is not an llm.c model file (another magic number)", CheckpointError,
         lambda: GPT2.from_pretrained(llmc_file("magic.bin", {0: 20240327})), T_LLMC_BAD),
        ("an llm.c model file of another version", CheckpointError,
         lambda: GPT2.from_pretrained(llmc_file("version.bin", {1: 2})), T_LLMC_BAD),
        ("an llm.c model file cut short", CheckpointError, lambda: GPT2.from_pretrained(llmc_file("cut.bin", cut=4)), T_LLMC_BAD),
        ("exporting a model llm.c cannot run (untied, another MLP width, another attention scale)", InputError,
         lambda: cli_error("llmc", "export", str(TMP / "llmc-odd"), "--model", str(odd_model())),
         "test_llmc.py::test_a_model_llmc_cannot_run_is_refused_before_any_file"),
    ]),
    ("Hooks and traces", [
        ("run_with_cache: a misspelt activation name", InputError,
         lambda: MODEL.run_with_cache(IDS, names_filter=["blocks.0.hook_resid_pr"]), "test_hooks.py::test_bad_names_list_the_nearest"),
        ("run_with_hooks: a block the model does not have", InputError,
         lambda: MODEL.run_with_hooks(IDS, fwd_hooks=[("blocks.7.hook_resid_pre", lambda a, n: None)]),
         "test_hooks.py::test_bad_names_list_the_nearest"),
        ("run_with_hooks: a replacement of the wrong shape", InputError,
         lambda: MODEL.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_q", lambda a, n: a.swapaxes(1, 2))]),
         "test_hooks.py::test_wrong_shaped_replacement_names_the_point"),
        ("cache[...]: a point the cache does not hold (a KeyError too)", InputError,
         lambda: MODEL.run_with_cache(IDS)[1]["result", 0], "test_activation_cache.py::test_what_the_cache_lacks_is_a_clear_key_error"),
        ("cache: a TransformerLens method gpt2np does not offer (an AttributeError too)", InputError,
         lambda: MODEL.run_with_cache(IDS)[1].get_neuron_results(), "test_activation_cache.py::test_what_the_cache_lacks_is_a_clear_key_error"),
        ("cache: a method that needs the weights, on GPT2's own cache (HookedTransformer's has them)", InputError,
         lambda: MODEL.run_with_cache(IDS)[1].stack_head_results(), "test_activation_cache.py::test_what_the_cache_lacks_is_a_clear_key_error"),
        ("run_with_hooks on one 1-D sequence: a replacement with the batch axis", InputError,
         lambda: MODEL.run_with_hooks(IDS[0], fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, hook: a[None])]),
         "test_activation_cache.py::test_one_sequence_hooks_see_what_the_cache_holds"),
        ("run_with_hooks / run_with_cache: a hook named by a number (fwd_hooks=[(5, fn)], names_filter=3)", InputError,
         lambda: MODEL.run_with_hooks(IDS, fwd_hooks=[(5, lambda a, n: None)]), "test_hooks.py::test_bad_names_list_the_nearest"),
        ("run_with_hooks: a forward hook that changes the logits, with bwd_hooks (the loss is the model's own logits')", InputError,
         lambda: MODEL.run_with_hooks(IDS, fwd_hooks=[("logits", lambda a, h: a * 2)], bwd_hooks=[("hook_embed", lambda g, h: None)]),
         "test_backward.py::test_gradient_points_refuse_what_they_cannot_do"),
        ("plain.forward / plain.generate given something else than a model's weights and config", InputError,
         lambda: __import__("gpt2np.plain").plain.forward(None, CONFIG, IDS),
         "test_plain.py::test_a_model_not_given_as_weights_and_config_is_refused"),
        ("compare: a reference holding NaN or inf (it would pass every candidate there) (exit 2)", InputError,
         lambda: cli_error("compare", reference_with("nanref", extra={"logits": np.full((2, 4, 100), np.nan, np.float32)}), reference_with("ok")),
         "test_compare.py::test_a_malformed_reference_tensor_is_bad_usage"),
        ("compare: a reference whose input_ids are floats, or whose metadata is nested too deeply to read (exit 2)", InputError,
         lambda: cli_error("compare", reference_with("deep", config="[" * 100_000 + "]" * 100_000), reference_with("ok")),
         "test_compare.py::test_a_malformed_reference_tensor_is_bad_usage, test_compare.py::test_a_malformed_reference_is_bad_usage_naming_the_field"),
        ("compare: --rtol of 1 or more (inf, 1e308: every candidate would pass) (exit 2)", InputError,
         lambda: cli_error("compare", reference_with("ok"), reference_with("ok"), "--rtol", "inf"),
         "test_compare.py::test_an_rtol_that_accepts_anything_is_bad_usage"),
        ("trace --ids / --pad-id: an id beyond int64", InputError,
         lambda: cli_error("trace", "--ids", str(2**63), "--model", TINY, "--out", str(TMP / "t.safetensors")),
         "test_trace.py::test_ids_bad_usage"),
        ("compare: a candidate file that does not exist (exit 2)", InputError,
         lambda: cli_error("compare", str(TMP / "nope.safetensors"), str(TMP / "nope2.safetensors")), "test_compare.py::test_bad_usage"),
        ("compare: a reference whose metadata cannot be trusted (exit 2)", InputError,
         lambda: cli_error("compare", reference_with("nan", float32_error='{"logits": NaN}'), reference_with("ok")),
         "test_compare.py::test_a_malformed_reference_is_bad_usage_naming_the_field"),
        ("compare: a reference with blocks not numbered 0, 1, ... (exit 2)", InputError,
         lambda: cli_error("compare", crafted_blocks(), reference_with("ok")),
         "test_compare.py::test_a_crafted_block_number_is_refused_at_once"),
        ("compare: a reference holding gradients but no labels (exit 2)", InputError,
         lambda: cli_error("compare", reference_with("nolabels", extra={"loss": np.ones(1, np.float32)}), reference_with("ok")),
         "test_trace_grads.py::test_a_reference_with_gradients_but_no_labels_is_bad_usage"),
        ("trace --labels: without --grads, or not one per row, or longer than the rows", InputError,
         lambda: cli_error("trace", "--ids", "1,2,3", "--grads", "--labels=-100,2,3", "--labels=-100,4", "--model", TINY,
                           "--out", str(TMP / "t.safetensors")),
         "test_trace_grads.py::test_bad_labels_are_named"),
        ("trace: --out names a directory", InputError,
         lambda: cli_error("trace", "x", "--model", TINY, "--out", str(folder("dir.safetensors"))), "test_trace.py::test_trace_bad_usage"),
        ("trace --ids: a token id that is not an integer", InputError,
         lambda: cli_error("trace", "--ids", "50256,x,481", "--model", TINY, "--out", str(TMP / "t.safetensors")),
         "test_trace.py::test_ids_bad_usage"),
        ("trace --ids: an --attention-mask that does not fit its row", InputError,
         lambda: cli_error("trace", "--ids", "1,2,3", "--attention-mask", "0,1", "--model", TINY, "--out", str(TMP / "t.safetensors")),
         "test_trace.py::test_ids_bad_usage"),
        ("trace --ids: rows of different lengths, and no pad id (no --pad-id, no eos_token_id)", InputError,
         lambda: cli_error("trace", "--ids", "1,2,3", "--ids", "4", "--model", str(folder("no-eos", config={**CONFIG.to_dict(), "eos_token_id": None})),
                           "--out", str(TMP / "t.safetensors")),
         "test_trace.py::test_rows_of_different_lengths_need_a_pad_id_when_the_model_has_no_eos"),
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
        ("a negative seed", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample=True, seed=-1),
         f"{T_INPUTS}::test_a_bad_seed_is_refused"),
        ("do_sample not a boolean", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample="no"), f"{T_INPUTS}::test_do_sample_must_be_a_boolean"),
        ("eos_token_id / pad_token_id outside the vocabulary", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, pad_token_id=100),
         f"{T_INPUTS}::test_eos_and_pad_ids_must_be_token_ids"),
        ("finite weights so large that float32 overflows: model(...)", ModelError, lambda: overflowing_model()(IDS),
         "test_model.py::test_an_overflow_is_an_error_naming_where_it_began"),
        ("... while generating", ModelError, lambda: overflowing_model().generate(IDS, max_new_tokens=1),
         "test_generation.py::test_overflowing_logits_stop_generation_with_a_clear_error"),
        ("... while scoring", ModelError, lambda: overflowing_model().score(IDS),
         "test_scoring.py::test_an_overflow_is_an_error_never_a_nan_score"),
        ("a hook that writes NaN or inf", ModelError,
         lambda: MODEL.run_with_hooks(IDS, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, n: a * np.inf)]),
         "test_model.py::test_a_hook_that_writes_nan_is_named_even_under_a_minus_inf_fill"),
        ("temperature that the logits' dtype rounds to 0 (1e-50 in float32; 1e-38 is fine: greedy)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample=True, temperature=1e-50),
         f"{T_INPUTS}::test_bad_generation_settings_are_refused_by_name, test_generation.py::test_a_tiny_temperature_samples_the_greedy_token"),
        ("num_beams < 1", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=0), T_GEN),
        ("num_return_sequences > num_beams (beam search)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2, num_return_sequences=3), T_GEN),
        ("num_return_sequences < 1", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, num_return_sequences=0), T_GEN),
        ("num_return_sequences > 1 with greedy decoding (transformers refuses it too)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_return_sequences=2), T_GEN),
        ("beam search with do_sample=True (beam sampling is not implemented)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2, do_sample=True), T_GEN),
        ("length_penalty not a finite number", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2, length_penalty=float("inf")), T_GEN),
        ("early_stopping not True, False or 'never'", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2, early_stopping="yes"), T_GEN),
        ("repetition_penalty <= 0", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, repetition_penalty=0), T_GEN),
        ("repetition_penalty the scores' dtype cannot carry as a normal number (1e-40, 1e-300 in float32: NaN and token 0; 1e300)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample=True, repetition_penalty=1e-40),
         "test_generation.py::test_a_repetition_penalty_the_dtype_cannot_carry_is_refused_without_a_warning"),
        ("repetition_penalty that takes a seen token's score beyond the dtype's range (1e-37 on a logit of 100)", InputError,
         lambda: __import__("gpt2np.processors").processors.repetition_penalty(np.array([[100.0]], np.float32), np.array([[0]]), 1e-37, np.array([0])),
         "test_processors.py::test_a_repetition_penalty_that_overflows_a_score_is_refused_never_nan"),
        ("length_penalty whose n_new_tokens ** length_penalty the dtype cannot carry (1e300: OverflowError; -1e300)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=8, num_beams=2, length_penalty=1e300),
         "test_generation.py::test_a_length_penalty_the_dtype_cannot_carry_is_refused"),
        ("num_beams (or num_return_sequences) whose rows cannot fit in memory (num_beams=2**40)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2**40),
         "test_generation.py::test_rows_beyond_the_machines_memory_are_refused_naming_the_size"),
        ("stop_strings holding a lone surrogate ('\\udcff', a byte of argv that is not UTF-8)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, stop_strings="\udcff", tokenizer=tokenizer()),
         "test_generation.py::test_a_stop_string_holding_a_lone_surrogate_is_refused, test_cli.py::test_bad_values"),
        ("score() of nothing but one-token rows (the loss would be NaN)", InputError, lambda: MODEL.score([[5]]),
         "test_scoring.py::test_a_one_token_text_has_nothing_to_score"),
        ("no_repeat_ngram_size < 0", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, no_repeat_ngram_size=-1), T_GEN),
        ("min_new_tokens beyond the length limit (transformers only warns)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=3, min_new_tokens=5), T_GEN),
        ("min_length beyond the length limit", InputError, lambda: MODEL.generate(IDS, max_new_tokens=3, min_length=12), T_GEN),
        ("min_p outside [0, 1]", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, do_sample=True, min_p=1.5), T_GEN),
        ("bad_words_ids not a list of lists of ids", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, bad_words_ids=[1, 2]), T_GEN),
        ("bad_words_ids with an id outside the vocabulary", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, bad_words_ids=[[5, 100]]), T_GEN),
        ("bad_words_ids holding the eos alone (transformers silently drops that word)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, bad_words_ids=[[99]]), T_GEN),
        ("stop_strings empty or not strings", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, stop_strings=["ok", ""]), T_GEN),
        ("stop_strings without tokenizer=", InputError, lambda: MODEL.generate(IDS, max_new_tokens=1, stop_strings="."), T_GEN),
        ("a tokenizer smaller than the model's vocabulary, for stop_strings", InputError,
         lambda: GPT2(BIG_VOCAB, weights_from_tensors(random_tensors(BIG_VOCAB, seed=1), BIG_VOCAB)).generate(
             IDS, max_new_tokens=1, stop_strings=".", tokenizer=tokenizer()),
         f"{T_INPUTS}::test_a_tokenizer_smaller_than_the_model_cannot_match_stop_strings"),
        ("return_dict_in_generate / output_scores / output_logits not booleans", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, output_scores=1), T_GEN),
        ("a streamer that is neither a function nor has .put", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, streamer=object()),
         "test_generation.py::test_a_streamer_that_is_not_one_is_refused_before_any_work"),
        ("a streamer with beam search (transformers refuses it too)", InputError,
         lambda: MODEL.generate(IDS, max_new_tokens=1, num_beams=2, streamer=print),
         "test_generation.py::test_a_streamer_that_is_not_one_is_refused_before_any_work"),
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
        ('a text holding a lone surrogate (JSON\'s "\\ud83d", an emoji cut in half)', InputError,
         lambda: tokenizer().encode("emoji cut in half \ud83d"), f"{T_TOK}::test_a_lone_surrogate_is_refused_with_the_reason"),
        ("a malformed vocab.json (or merges.txt)", CheckpointError,
         lambda: Tokenizer.from_pretrained(tokenizer_folder("badvocab", "vocab.json", '{"a": 1,'), verify=False),
         f"{T_TOK}::test_malformed_vocab_or_merges_get_a_clear_error"),
        ("a malformed tokenizer.json", CheckpointError,
         lambda: Tokenizer.from_pretrained(tokenizer_folder("badjson", "tokenizer.json", "[1, 2"), verify=False),
         f"{T_TOK}::test_a_malformed_tokenizer_json_gets_a_clear_error"),
    ]),
    ("Scoring a corpus (`gpt2np score --file`): refused before any output is opened", [
        ("--out that is the input (the same file by device and inode: a symlink, a hard link, stdin)", InputError,
         lambda: score_file_error(corpus("same.txt", ["My dog is"]), str(TMP / "same.txt")),
         f"{T_SFO}::test_an_out_that_is_the_input_is_refused_and_the_input_untouched, {T_SFO}::test_stdin_that_is_the_out_is_refused"),
        ("--stride beyond the model's context (or below 1)", InputError,
         lambda: score_file_error(corpus("s.txt", ["My dog is"]), str(TMP / "s.jsonl"), "--stride", "100"),
         f"{T_SFO}::test_a_bad_option_never_touches_an_existing_out"),
        ("--batch-size or --max-tokens below 1", InputError,
         lambda: score_file_error(corpus("b.txt", ["My dog is"]), str(TMP / "b.jsonl"), "--batch-size", "0"),
         f"{T_SFO}::test_a_bad_option_never_touches_an_existing_out"),
        ('--text-field ""', InputError,
         lambda: score_file_error(corpus("t.jsonl", ['{"text": "My dog is"}']), str(TMP / "t.out"), "--text-field", ""),
         f"{T_SFO}::test_a_bad_option_never_touches_an_existing_out"),
        ("a second run on the same --out (OUT.lock is held)", InputError, lambda: locked_out(),
         f"{T_SFO}::test_a_second_run_on_the_same_out_refuses, {T_SFO}::test_two_processes_on_one_out"),
        ("a run without --resume over an interrupted run's OUT.part", InputError, lambda: interrupted_part(),
         f"{T_SFO}::test_a_run_without_resume_never_throws_an_interrupted_one_away"),
        ("--resume of an --out without its sidecar OUT.meta.json (another program's)", InputError,
         lambda: resume_without_sidecar(),
         "test_score_file.py::test_resume_refuses_a_file_it_did_not_write"),
        ("--resume with other settings (each difference named)", InputError,
         lambda: score_file_error(*scored("settings"), "--token-logprobs", "--batch-size", "4", "--resume"),
         f"{T_SFO}::test_resume_refuses_other_settings_naming_them"),
        ('--resume with a sidecar edited by hand ("lines": -5) or nested too deeply to read', InputError,
         lambda: sidecar_edited("edited-sidecar"),
         f"{T_SFO}::test_resume_refuses_an_edited_sidecar_with_one_message"),
        ("--resume with another input (its lines' sha256), or more records than the input has lines", InputError,
         lambda: resume_with_another_input(),
         f"{T_SFO}::test_resume_refuses_another_input, {T_SFO}::test_resume_refuses_more_records_than_the_input_has_lines"),
    ]),
    ("Ray (`gpt2np.ray.score_dataset`)", [
        ("actors that would take every CPU (Ray Data's read tasks would never start: a hang)", InputError,
         lambda: actor_cpus(2, 1, 2.0), "test_ray.py::test_actors_leave_a_cpu_for_the_reads, test_ray.py::test_explicit_cpus_that_would_hang_are_refused"),
        ("a model folder that is not there, stride 0 or beyond the context, dtype float16, batch_size or max_tokens 0: refused in the driver, before Ray starts an actor", InputError,
         lambda: check_arguments(str(GOOD), None, "text", 64, 4096, 16, "float32"),
         "test_ray.py::test_bad_arguments_are_refused_in_the_driver_before_any_actor"),
    ]),
    ("Command line (one line on stderr, no traceback unless --debug)", [
        ("a bad flag or a value of the wrong type (exit 2)", SystemExit, lambda: cli_error("generate", "x", "--max-new-tokens", "abc"),
         f"{T_CLI}::test_bad_flags_are_one_line_and_exit_2"),
        ("a bad value (exit 1)", InputError, lambda: cli_error("generate", "x", "--model", TINY, "--tokenizer", TOK, "--top-p", "2"),
         f"{T_CLI}::test_bad_values"),
        ("a model that is not there (exit 1): every command points to `gpt2np random-model`", ModelNotFoundError,
         lambda: cli_error("generate", "x", "--model", "no-such-model"),
         f"{T_CLI}::test_an_unknown_model_offline, {T_CLI}::test_every_command_that_cannot_find_a_model_points_to_random_model"),
        ("a model folder without tokenizer files whose vocabulary is not GPT-2's", ModelNotFoundError,
         lambda: cli_error("generate", "x", "--model", str(GOOD)), (f"{T_CLI}::test_a_model_folder_without_tokenizer_files, "
         f"{T_HUB}::test_a_model_folder_without_tokenizer_files_uses_gpt2s_when_its_config_has_gpt2s_vocabulary")),
        ("`score` of one-token texts only: nothing to score", InputError, lambda: cli_error("score", "Hello", "--model", TINY),
         "test_score_cli.py::test_a_one_token_text_says_there_is_nothing_to_score"),
        ("`score` of a text longer than the context", InputError, lambda: cli_error("score", " ".join(["word"] * 70), "--model", TINY),
         "test_score_cli.py::test_a_text_longer_than_the_context_gets_scores_advice"),
        ("`--bad-words` text with no tokens (exit 1)", InputError,
         lambda: cli_error("generate", "x", "--model", TINY, "--tokenizer", TOK, "--bad-words", ""), f"{T_CLI}::test_bad_values"),
        ("a tokenizer larger than the model's vocabulary", InputError,
         lambda: cli_error("generate", "x", "--model", str(GOOD), "--tokenizer", TOK), f"{T_CLI}::test_a_tokenizer_larger_than_the_model"),
        ("`random-model`: a shape GPT2Config refuses (n_embd not a multiple of n_head, a size below 1)", InputError,
         lambda: cli_error("random-model", str(TMP / "rm"), "--n-embd", "30", "--n-head", "4"),
         "test_random_model.py::test_bad_flags_are_named_as_flags"),
        ("`random-model` into a folder that already holds a model", InputError,
         lambda: cli_error("random-model", str(GOOD), "--n-embd", "8", "--n-head", "2"),
         "test_random_model.py::test_an_existing_model_or_a_file_is_not_overwritten"),
        ("`random-model` of a shape whose bytes exceed the memory available (n_embd 2**62, vocab 10**9, ...)", InputError,
         lambda: cli_error("random-model", str(TMP / "huge"), "--vocab-size", str(10**9)),
         "test_random_model.py::test_a_size_beyond_the_machines_memory_is_refused_naming_it"),
        ("a NumPy warning (overflow, invalid value) during a command: stopped, no result (exit 1)", RuntimeWarning,
         lambda: cli_warning(), f"{T_CLI}::test_a_numpy_warning_never_reaches_the_terminal"),
        ("any other exception (a bug) (exit 1)", RuntimeError, lambda: cli_unexpected(), f"{T_CLI}::test_an_unexpected_exception_is_still_one_line"),
    ]),
    ("Writing files: the overwrite rule (score --out, trace --out, plot --out, page --out, random-model, download, llmc export/import; exit 1 unless --overwrite)", [
        ("an --out that is a file of the loaded model (score --out M/model.safetensors, M/config.json; trace --out M/model.safetensors)", InputError,
         lambda: cli_error("score", "--file", corpus("ow.txt", ["My dog is"]), "--out", tiny_copy("ow-model") + "/model.safetensors",
                           "--model", str(TMP / "ow-model"), "--tokenizer", TOK, "--no-progress"),
         f"{T_OW}::test_score_never_writes_over_the_models_own_files, {T_OW}::test_trace_never_writes_over_the_models_weights"),
        ("an --out that exists and is not this command's output (another program's file)", InputError,
         lambda: cli_error("trace", "x", "--model", TINY, "--tokenizer", TOK, "--out", str(GOOD / "model.safetensors")),
         f"{T_OW}::test_a_file_the_command_did_not_write_is_replaced_only_with_overwrite"),
        ("an --out that is a symlink to a file (its target would be replaced)", InputError,
         lambda: cli_error("score", "--file", corpus("ow2.txt", ["My dog is"]), "--out", symlink_to("link.jsonl", user_file("target.jsonl")),
                           "--model", TINY, "--tokenizer", TOK, "--no-progress"),
         f"{T_OW}::test_a_symlinked_out_is_written_through_only_with_overwrite"),
        ("`random-model DIR` where DIR holds anything (the user's own config.json)", InputError,
         lambda: cli_error("random-model", user_folder("mine"), "--n-embd", "8", "--n-head", "2"),
         f"{T_OW}::test_random_model_writes_only_into_an_empty_or_new_folder"),
        ("`random-model ''` (the current directory) (exit 2)", SystemExit,
         lambda: cli_error("random-model", ""), f"{T_OW}::test_random_model_into_an_empty_name_is_a_usage_error"),
        ("`download --dest DIR` where DIR holds files no earlier download put there", InputError,
         lambda: cli_error("download", "gpt2", "--dest", user_folder("mine2")),
         f"{T_OW}::test_download_writes_only_into_a_new_folder_or_an_earlier_download"),
        ("`llmc export OUT_DIR` where OUT_DIR holds more than llm.c's .bin files, or would write over the llm.c model file being exported", InputError,
         lambda: cli_error("llmc", "export", user_folder("mine3"), "--model", TINY),
         "test_llmc.py::test_export_and_import_follow_the_overwrite_rule"),
        ("`llmc import MODEL_BIN OUT_DIR` where OUT_DIR is not empty", InputError,
         lambda: cli_error("llmc", "import", str(TMP / "nothing.bin"), user_folder("mine4")),
         "test_llmc.py::test_export_and_import_follow_the_overwrite_rule"),
    ]),
    ("Training (`gpt2np train`): refused before any work (exit 1; 2 for usage)", [
        ("a --data file that is not there", InputError, lambda: train("t1", data=train_data("nothing.txt")), f"{T_TRAIN}::test_bad_data_files"),
        ("an empty --data file", InputError, lambda: train("t2", data=train_data("empty.txt", b"")), f"{T_TRAIN}::test_bad_data_files"),
        ("a binary --data file (a NUL byte; or not UTF-8)", InputError,
         lambda: train("t3", data=train_data("picture.png", b"\x89PNG\r\n\x1a\n\0\0")), f"{T_TRAIN}::test_bad_data_files"),
        ("data shorter than one sequence (--seq-len + 1 tokens)", InputError,
         lambda: train("t4", data=train_data("short.txt", b"Too short.")), f"{T_TRAIN}::test_bad_data_files"),
        ("--seq-len above the model's context (n_positions)", InputError, lambda: train("t5", "--seq-len", "65"),
         f"{T_TRAIN}::test_bad_numbers_and_lengths"),
        ("llm.c's token file with an id beyond the model's vocabulary", InputError,
         lambda: train("t6", data=llmc_tokens("big-ids.bin", [1, 2, 50257] * 20)), f"{T_TRAIN}::test_token_files"),
        ("a learning rate that is NaN, inf or negative (--lr, --min-lr)", InputError, lambda: train("t7", "--lr", "nan"),
         f"{T_TRAIN}::test_bad_numbers_and_lengths"),
        ("a loss that becomes NaN or inf: stopped, the step named, the last good checkpoint kept", GPT2npError,
         lambda: train("t8", "--lr", "1e30", "--grad-clip", "0", "--steps", "20", "--overwrite"),
         f"{T_TRAIN}::test_a_loss_that_becomes_nan_stops_and_keeps_the_last_good_checkpoint"),
        ("--out the folder of the model being trained (even with --overwrite)", InputError,
         lambda: (lambda m: train("t9", "--model", m, "--out", m, "--overwrite"))(tiny_copy("train-self")), f"{T_TRAIN}::test_out_is_the_models_folder_refused"),
        ("--out a folder that holds anything, without --resume or --overwrite", InputError,
         lambda: train("t10", "--out", user_folder("train-mine")),
         f"{T_TRAIN}::test_an_existing_folder_is_refused_without_resume_or_overwrite"),
        ("--resume with another model, data file or setting that changes the result (each named)", InputError,
         lambda: train(trained("t11"), "--resume", "--lr", "1e-3"), f"{T_TRAIN}::test_resume_with_other_settings_is_refused_naming_them"),
        ("a flag's value that is not a number (--steps many) (exit 2)", SystemExit, lambda: train("t12", "--steps", "many"),
         f"{T_TRAIN}::test_bad_numbers_and_lengths"),
    ]),
]  # fmt: skip
