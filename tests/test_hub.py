"""Where model files come from (hub.py), offline, and the proof that they are the right ones.

No test here touches the network or the user's caches: HF_HOME, GPT2NP_WEIGHTS and
GPT2NP_CACHE point into tmp_path. Hub caches are built by hand in the layout huggingface_hub
writes (models--ORG--NAME/{refs/main, snapshots/<commit>/<file> -> ../../blobs/<hash>}). The
download path runs against FakeHub, a local HTTP server that speaks the part of the hub
protocol hf_hub_download uses (HEAD/GET /{repo}/resolve/{revision}/{file}).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import gpt2np.hub as hub
from gpt2np import GPT2, CheckpointError, ConfigError, GPT2Config, ModelNotFoundError, Tokenizer
from gpt2np.hub import (
    GPT2_TOKENIZER_FILES,
    HUB_REPOS,
    KNOWN_FILES,
    resolve_model_files,
    resolve_tokenizer_files,
    verify_file,
)
from gpt2np.tools.random_model import make_random_checkpoint

CONFIG = GPT2Config(vocab_size=60, n_positions=12, n_embd=8, n_layer=1, n_head=2, eos_token_id=59)
IDS = np.array([[1, 2, 3]])
LFS_SUFFIXES = (".safetensors", ".bin")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    """What the hub names a small (non-LFS) file's blob: its git object id."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def blob_name(filename: str, data: bytes) -> str:
    return sha256(data) if filename.endswith(LFS_SUFFIXES) else git_sha1(data)


def add_to_hub_cache(
    hf_home: Path, repo_id: str, files: dict[str, bytes], blob_names: dict[str, str] | None = None
) -> Path:
    """Lay files out as huggingface_hub caches them; return the snapshot folder.
    blob_names overrides a file's blob name (to fake a blob whose content does not match)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for filename, data in files.items():
        name = (blob_names or {}).get(filename) or blob_name(filename, data)
        (repo / "blobs" / name).write_bytes(data)
        (snapshot / filename).symlink_to(Path("..") / ".." / "blobs" / name)
    return snapshot


def model_files(tmp_path: Path, seed: int = 0, config: GPT2Config = CONFIG) -> dict[str, bytes]:
    folder = make_random_checkpoint(tmp_path / f"src-{seed}", config, seed=seed)
    return {f: (folder / f).read_bytes() for f in ("config.json", "model.safetensors")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Fresh, empty caches and weights folder; offline unless a test says otherwise."""
    env = {
        "HF_HOME": tmp_path / "hf",
        "GPT2NP_WEIGHTS": tmp_path / "weights",
        "GPT2NP_CACHE": tmp_path / "gpt2np-cache",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    for key in ("HF_HUB_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def hf_home(tmp_path) -> Path:
    return tmp_path / "hf"


@pytest.fixture
def sha_calls(monkeypatch) -> list:
    """Records every file hub.py hashes."""
    calls, real = [], hub.sha256_of

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(hub, "sha256_of", counting)
    return calls


# --- the published numbers --------------------------------------------------------------


def test_known_files_hold_the_published_sizes_and_hashes():
    """The published numbers (issue 5; the hub's listing of openai-community/gpt2), typed in by hand."""
    assert KNOWN_FILES[("openai-community/gpt2", "model.safetensors")] == (
        548105171,
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
    )
    assert GPT2_TOKENIZER_FILES == {
        "vocab.json": (1042301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "merges.txt": (456318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    }
    for repo in HUB_REPOS.values():  # all five models share GPT-2's tokenizer
        for filename, expected in GPT2_TOKENIZER_FILES.items():
            assert KNOWN_FILES[(repo, filename)] == expected
    assert HUB_REPOS["gpt2"] == "openai-community/gpt2"


def test_the_packaged_tokenizer_files_match_the_table(tokenizer_dir, sha_calls):
    """The copy inside the package is GPT-2's: sizes and sha256 computed here, not trusted."""
    assert tokenizer_dir == Path(hub.__file__).resolve().parent / "tokenizer_files"
    for filename, (size, digest) in GPT2_TOKENIZER_FILES.items():
        data = (tokenizer_dir / filename).read_bytes()
        assert (len(data), sha256(data)) == (size, digest), filename
        verify_file(tokenizer_dir / filename, "openai-community/gpt2", filename)  # and hub.py agrees
    assert len(sha_calls) == 2


def test_the_tokenizer_files_are_package_data():
    """pyproject.toml ships them in the wheel (an installed gpt2np has no checkout around it)."""
    import tomllib

    pyproject = tomllib.loads((Path(hub.__file__).resolve().parents[1] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["gpt2np"]
    assert sorted(shipped) == sorted(f"tokenizer_files/{f}" for f in GPT2_TOKENIZER_FILES)


@pytest.mark.parametrize("name", [*HUB_REPOS, *HUB_REPOS.values()])
def test_gpt2s_tokenizer_needs_no_network_and_no_cache(name, tmp_path):
    """Offline (HF_HUB_OFFLINE=1), with empty caches and an empty weights/: the five names and
    their hub ids all get the package's own files."""
    files = resolve_tokenizer_files(name)
    assert files == {f: hub.PACKAGED_TOKENIZER / f for f in ("vocab.json", "merges.txt")}
    assert Tokenizer.from_pretrained(name).encode("It will rain in the") == [1026, 481, 6290, 287, 262]
    assert not any(Path(os.environ["HF_HOME"]).rglob("*"))  # nothing was cached on the way


def test_a_model_folder_without_tokenizer_files_uses_gpt2s_when_its_config_has_gpt2s_vocabulary(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**CONFIG.to_dict(), "vocab_size": 50257}))
    assert resolve_tokenizer_files(folder) == hub.packaged_tokenizer_files()
    (folder / "config.json").write_text(json.dumps(CONFIG.to_dict()))  # 60 tokens: not GPT-2's vocabulary
    with pytest.raises(
        ModelNotFoundError,
        match=r"model has no tokenizer files \(vocab.json \+ merges.txt or tokenizer.json\).*"
        r"config.json has 60 tokens, not GPT-2's 50257.*--tokenizer FOLDER",
    ):
        Tokenizer.from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"has no config.json.*--tokenizer FOLDER"):
        Tokenizer.from_pretrained(folder)


@pytest.mark.parametrize(
    "content, said",
    [
        ("{not json", r"config.json is not valid JSON \(.*\); restore it"),
        ("[50257]", "config.json must hold a JSON object, found list"),
        ("", "config.json is empty"),
    ],
)
def test_a_broken_config_json_is_reported_as_broken_not_as_missing(tmp_path, content, said):
    """Looking for GPT-2's vocabulary size in a folder without tokenizer files once took a
    config.json it could not read for no config.json at all ("has no config.json")."""
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=said):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 8}))  # readable, but no vocab_size
    with pytest.raises(
        ModelNotFoundError, match=r"has no tokenizer files .* does not fit: config.json has no vocab_size"
    ):
        Tokenizer.from_pretrained(tmp_path)


def test_a_pickle_beside_the_safetensors_does_not_cost_the_folder_gpt2s_tokenizer(tmp_path):
    """model.safetensors + pytorch_model.bin (transformers saves both), GPT-2's vocabulary, no
    tokenizer files: the tokenizer is GPT-2's own, as without the pickle (which is never read)."""
    config = dataclasses.replace(CONFIG, vocab_size=50257, eos_token_id=50256)
    folder = make_random_checkpoint(tmp_path / "m", config)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    assert resolve_tokenizer_files(folder) == hub.packaged_tokenizer_files()
    assert Tokenizer.from_pretrained(folder).encode("It will rain in the") == [1026, 481, 6290, 287, 262]
    assert GPT2.from_pretrained(folder).config.vocab_size == 50257  # the safetensors file is the model


def test_a_folder_with_its_own_tokenizer_keeps_it(tmp_path, tokenizer_dir):
    (tmp_path / "tokenizer.json").write_bytes(b"{}")  # not even valid: proves it is the one chosen
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG.to_dict(), "vocab_size": 50257}))
    assert resolve_tokenizer_files(tmp_path) == {"tokenizer.json": tmp_path / "tokenizer.json"}


def test_missing_package_files_say_to_reinstall(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "PACKAGED_TOKENIZER", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"vocab.json, merges.txt are missing from .*reinstall it"):
        Tokenizer.from_pretrained("gpt2")


def test_a_changed_tokenizer_file_is_refused(tokenizer_dir, tmp_path):
    vocab = bytearray((tokenizer_dir / "vocab.json").read_bytes())
    vocab[100] ^= 1  # same size, one bit different
    (tmp_path / "vocab.json").write_bytes(bytes(vocab))
    with pytest.raises(
        CheckpointError,
        match=r"vocab.json has sha256 [0-9a-f]{64} but openai-community/gpt2's vocab.json has 196139668be6.*"
        r"the file is corrupted; delete it and download it again.*verify=False / --no-verify",
    ):
        verify_file(tmp_path / "vocab.json", "openai-community/gpt2", "vocab.json")
    (tmp_path / "merges.txt").write_bytes((tokenizer_dir / "merges.txt").read_bytes()[:-10])
    with pytest.raises(
        CheckpointError,
        match=r"merges.txt is 456308 bytes but openai-community/gpt2's merges.txt is 456318 bytes: it is truncated",
    ):
        verify_file(tmp_path / "merges.txt", "openai-community/gpt2", "merges.txt")


# --- the Hugging Face cache, offline -----------------------------------------------------


def test_a_cached_repo_is_found_offline(tmp_path, hf_home):
    files = model_files(tmp_path)
    snapshot = add_to_hub_cache(hf_home, "acme/tiny", files)
    found = resolve_model_files("acme/tiny")
    assert found == {f: snapshot / f for f in files}
    model = GPT2.from_pretrained("acme/tiny")
    np.testing.assert_array_equal(model(IDS).logits, GPT2.from_pretrained(tmp_path / "src-0")(IDS).logits)


def test_a_cached_repo_is_found_without_network_even_when_not_offline(tmp_path, hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    add_to_hub_cache(hf_home, "acme/tiny", model_files(tmp_path))
    assert GPT2.from_pretrained("acme/tiny").config == CONFIG


def test_hf_hub_cache_wins_over_hf_home(tmp_path, monkeypatch):
    add_to_hub_cache(tmp_path / "other", "acme/tiny", model_files(tmp_path))  # -> other/hub/models--acme--tiny
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other" / "hub"))
    assert resolve_model_files("acme/tiny")["config.json"].is_relative_to(tmp_path / "other")


@pytest.mark.parametrize("cached_as", ["gpt2", "openai-community/gpt2"])
@pytest.mark.parametrize("asked_as", ["gpt2", "openai-community/gpt2"])
def test_gpt2_is_found_under_either_hub_name(tokenizer_dir, hf_home, cached_as, asked_as):
    """transformers caches `gpt2` under models--gpt2 or models--openai-community--gpt2,
    depending on the name it was given; either is used. The real tokenizer files are
    checked against the published hashes on the way."""
    files = {f: (tokenizer_dir / f).read_bytes() for f in ("vocab.json", "merges.txt")}
    snapshot = add_to_hub_cache(hf_home, cached_as, files)
    # (Tokenizer.from_pretrained takes the package's copy of these; the cache lookup is resolve_files.)
    assert hub.resolve_files(asked_as, hub.TOKENIZER_FILES) == {f: snapshot / f for f in files}
    tok = Tokenizer.from_pretrained(asked_as)
    assert tok.encode("It will rain in the") == [1026, 481, 6290, 287, 262]


@pytest.mark.parametrize("cached_as", ["gpt2", "openai-community/gpt2"])
def test_a_cached_gpt2_that_is_not_the_official_file_is_refused(tmp_path, hf_home, cached_as):
    """A model.safetensors cached for gpt2 is checked against the published size: ours (a tiny
    random model) is not GPT-2's, and verify=False is the explicit way to use it anyway."""
    files = model_files(tmp_path)
    snapshot = add_to_hub_cache(hf_home, cached_as, files)
    with pytest.raises(
        CheckpointError,
        match=rf"is {len(files['model.safetensors'])} bytes but openai-community/gpt2's model.safetensors is 548105171 bytes",
    ):
        GPT2.from_pretrained("gpt2")
    assert GPT2.from_pretrained("gpt2", verify=False).config == CONFIG
    assert resolve_model_files("gpt2", verify=False)["model.safetensors"] == snapshot / "model.safetensors"


def test_a_blob_whose_content_does_not_match_its_name_is_refused(tmp_path, hf_home):
    files = model_files(tmp_path)
    damaged = bytearray(files["model.safetensors"])
    damaged[-1] ^= 0xFF  # the last weight's last byte: still a loadable file
    claimed = sha256(files["model.safetensors"])
    add_to_hub_cache(
        hf_home, "acme/tiny", {**files, "model.safetensors": bytes(damaged)}, blob_names={"model.safetensors": claimed}
    )
    with pytest.raises(
        CheckpointError,
        match=rf"has sha256 {sha256(bytes(damaged))} but acme/tiny's model.safetensors has {claimed}: the file is corrupted",
    ):
        GPT2.from_pretrained("acme/tiny")
    assert GPT2.from_pretrained("acme/tiny", verify=False).config == CONFIG  # the explicit way out


def test_small_files_named_by_git_sha1_are_not_hashed(tmp_path, hf_home, sha_calls):
    """config.json's blob is named by its git object id, not a sha256: nothing to compare."""
    files = model_files(tmp_path)
    add_to_hub_cache(hf_home, "acme/tiny", files)
    resolve_model_files("acme/tiny")
    assert [p.name for p in sha_calls] == ["model.safetensors"]


def test_verification_is_remembered_until_the_file_changes(tmp_path, hf_home, sha_calls):
    files = model_files(tmp_path)
    snapshot = add_to_hub_cache(hf_home, "acme/tiny", files)
    GPT2.from_pretrained("acme/tiny")
    assert len(sha_calls) == 1
    stamps = list((tmp_path / "gpt2np-cache" / "verified").iterdir())
    assert len(stamps) == 1  # under GPT2NP_CACHE
    GPT2.from_pretrained("acme/tiny")
    GPT2.from_pretrained("acme/tiny")
    assert len(sha_calls) == 1  # the stamp spared the hashing
    # The file changes (same size, new mtime): the stamp no longer applies, and the damage is found.
    blob = (snapshot / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns + 10**9))
    with pytest.raises(CheckpointError, match="the file is corrupted"):
        GPT2.from_pretrained("acme/tiny")
    assert len(sha_calls) == 2


def test_an_unwritable_stamp_folder_only_costs_a_second_hash(tmp_path, hf_home, sha_calls, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("GPT2NP_CACHE", str(tmp_path / "a-file"))
    add_to_hub_cache(hf_home, "acme/tiny", model_files(tmp_path))
    GPT2.from_pretrained("acme/tiny")
    GPT2.from_pretrained("acme/tiny")
    assert len(sha_calls) == 2


def test_known_file_sizes_and_hashes_are_enforced(tmp_path, hf_home, monkeypatch, sha_calls):
    """The mechanism behind gpt2's published hash, on a file we have: a table entry for
    acme/tiny's model.safetensors."""
    files = model_files(tmp_path)
    data = files["model.safetensors"]
    add_to_hub_cache(hf_home, "acme/tiny", files)
    known = ("acme/tiny", "model.safetensors")
    monkeypatch.setattr(hub, "KNOWN_FILES", {known: (len(data) + 1, sha256(data))})
    with pytest.raises(
        CheckpointError, match=rf"is {len(data)} bytes but acme/tiny's model.safetensors is {len(data) + 1} bytes"
    ):
        GPT2.from_pretrained("acme/tiny")
    assert sha_calls == []  # a wrong size is refused before hashing 500 MB
    monkeypatch.setattr(hub, "KNOWN_FILES", {known: (len(data), "0" * 64)})
    with pytest.raises(
        CheckpointError, match=rf"has sha256 {sha256(data)} but acme/tiny's model.safetensors has 0{{64}}"
    ):
        GPT2.from_pretrained("acme/tiny")
    monkeypatch.setattr(hub, "KNOWN_FILES", {known: (len(data), sha256(data))})
    assert GPT2.from_pretrained("acme/tiny").config == CONFIG


def test_known_files_are_checked_in_the_weights_folder_too(tmp_path, monkeypatch):
    """`gpt2np download gpt2` fills weights/gpt2/; what is found there is checked as gpt2's."""
    folder = make_random_checkpoint(tmp_path / "weights" / "gpt2", CONFIG)
    with pytest.raises(CheckpointError, match="but openai-community/gpt2's model.safetensors is 548105171 bytes"):
        GPT2.from_pretrained("gpt2")
    assert GPT2.from_pretrained("gpt2", verify=False).config == CONFIG
    data = (folder / "model.safetensors").read_bytes()
    monkeypatch.setitem(hub.KNOWN_FILES, ("openai-community/gpt2", "model.safetensors"), (len(data), sha256(data)))
    assert GPT2.from_pretrained("gpt2").config == CONFIG


def test_a_cached_repo_with_only_pytorch_model_bin_is_refused_unread(tmp_path, hf_home):
    marker = tmp_path / "the-pickle-ran"
    payload = pickle.dumps(_Payload(marker))
    add_to_hub_cache(
        hf_home, "acme/old", {"config.json": json.dumps(CONFIG.to_dict()).encode(), "pytorch_model.bin": payload}
    )
    with pytest.raises(
        CheckpointError,
        match="the cached hub repo acme/old has only pytorch_model.bin, a pickle file. gpt2np never unpickles",
    ):
        GPT2.from_pretrained("acme/old")
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# --- resolution order --------------------------------------------------------------------


def test_resolution_order_folder_then_weights_then_cache(tmp_path, hf_home, monkeypatch):
    name = "acme-model"  # a valid hub id, a folder name and a weights/ name at once
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cache = add_to_hub_cache(hf_home, name, model_files(tmp_path, seed=1))
    weights = make_random_checkpoint(tmp_path / "weights" / name, CONFIG, seed=2)
    here = make_random_checkpoint(tmp_path / "cwd" / name, CONFIG, seed=3)
    logits = {seed: GPT2.from_pretrained(folder)(IDS).logits for seed, folder in ((1, cache), (2, weights), (3, here))}

    def loaded_seed():
        out = GPT2.from_pretrained(name)(IDS).logits
        return [seed for seed, ref in logits.items() if np.array_equal(out, ref)]

    assert resolve_model_files(name)["model.safetensors"].resolve() == here.resolve() / "model.safetensors"
    assert loaded_seed() == [3]  # 1. the folder in the working directory
    for f in here.iterdir():
        f.unlink()
    here.rmdir()
    assert resolve_model_files(name)["model.safetensors"] == weights / "model.safetensors"
    assert loaded_seed() == [2]  # 2. weights/<name> ($GPT2NP_WEIGHTS)
    (weights / "model.safetensors").unlink()  # an incomplete weights/<name> is passed over
    assert resolve_model_files(name)["model.safetensors"] == cache / "model.safetensors"
    assert loaded_seed() == [1]  # 3. the Hugging Face cache


def test_an_incomplete_local_folder_is_an_error_not_a_fallback(tmp_path, hf_home):
    """A folder given by path is what the user meant: it lacking a file is reported, even if
    the hub cache has a model of that name."""
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    with pytest.raises(ModelNotFoundError, match="half lacks model.safetensors"):
        GPT2.from_pretrained(folder)


def test_where_the_caches_are(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hub.hub_cache_dir() == tmp_path / "direct"
    assert hub.weights_dir() == tmp_path / "weights"
    monkeypatch.delenv("GPT2NP_WEIGHTS")
    assert hub.weights_dir() == Path(hub.__file__).resolve().parent.parent / "weights"  # the checkout's


# --- not found ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "acme/tiny", "distilgpt2"])
def test_offline_and_not_cached_says_how_to_get_the_files(name):
    with pytest.raises(
        ModelNotFoundError,
        match=rf"'{name}' is not downloaded and HF_HUB_OFFLINE is set.*Run `gpt2np download {name}` on a machine with network",
    ):
        GPT2.from_pretrained(name)
    if name not in HUB_REPOS:  # GPT-2's own tokenizer ships with gpt2np; another repo's does not
        with pytest.raises(ModelNotFoundError, match=f"Run `gpt2np download {name}`"):
            Tokenizer.from_pretrained(name)


def test_no_network_and_not_cached_says_how_to_get_the_files(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        ModelNotFoundError,
        match=r"cannot get 'gpt2': the Hugging Face hub is unreachable.*Run `gpt2np download gpt2` on a machine with network",
    ):
        GPT2.from_pretrained("gpt2")


def test_local_files_only_never_downloads(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match="Run `gpt2np download acme/x`"):
        GPT2.from_pretrained("acme/x", local_files_only=True)


@pytest.mark.parametrize("name", ["bad name!", "--x", "x" * 200])
def test_a_name_that_cannot_be_a_repo(name):
    with pytest.raises(
        ModelNotFoundError,
        match=r"is not a model folder, not in .*, and not a valid hub repo id; known names: gpt2, gpt2-medium",
    ):
        GPT2.from_pretrained(name)


@pytest.mark.parametrize("name", ["weights/tiny", "./tiny", "a/b/c", "weights/test-models/tni"])
def test_a_name_that_looks_like_a_folder_is_not_sent_to_the_hub(name, tmp_path, monkeypatch):
    """A mistyped relative folder: 'weights/tiny' run where ./weights exists is a folder name,
    not the hub repo 'weights/tiny' (a hub id has one '/', and no folder 'weights' here)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "test-models" / "tiny").mkdir(parents=True)
    with pytest.raises(ModelNotFoundError, match=rf"^no folder \./{re.escape(name.removeprefix('./'))}\b") as e:
        GPT2.from_pretrained(name)
    assert "hub" not in str(e.value) and "download" not in str(e.value)
    if name.startswith("weights/test-models/"):  # what is there, to spot the typo
        assert "(weights/test-models exists and holds tiny)" in str(e.value)
    with pytest.raises(ModelNotFoundError, match="^no folder"):
        Tokenizer.from_pretrained(name)


def test_a_file_given_as_the_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="model.safetensors is a file, not a folder"):
        GPT2.from_pretrained(str(tmp_path / "model.safetensors"))


def test_download_refuses_when_offline(tmp_path):
    with pytest.raises(
        ModelNotFoundError, match="cannot download 'gpt2': HF_HUB_OFFLINE is set; unset it on a machine with network"
    ):
        hub.download("gpt2", dest=tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_download_without_network_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        ModelNotFoundError,
        match=r"cannot download 'gpt2': the Hugging Face hub \(http://127.0.0.1:\d+\) is unreachable.*copy weights/gpt2/ here",
    ):
        hub.download("gpt2", dest=tmp_path / "dest")


# --- a fake hub: downloads end to end ----------------------------------------------------


class FakeHub:
    """A local stand-in for huggingface.co: HEAD/GET /{repo}/resolve/{revision}/{file}.

    Headers as the hub sends them: X-Repo-Commit; ETag = git sha1 for small files; for LFS
    files (.safetensors, .bin) X-Linked-Etag = sha256 and X-Linked-Size. Missing repos and
    files get 404 with X-Error-Code RepoNotFound / EntryNotFound. `corrupt` files are served
    with one byte flipped under the original's ETag: a download damaged on the way."""

    def __init__(self, repos: dict[str, dict[str, bytes]], corrupt: set[str] = frozenset()):
        self.repos, self.corrupt, self.requests = repos, set(corrupt), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                fake.serve(self, body=False)

            def do_GET(self):
                fake.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def file_requests(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if "/resolve/" in p]

    def serve(self, h: BaseHTTPRequestHandler, body: bool):
        self.requests.append((h.command, h.path))
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", h.path.split("?")[0])
        if not m or m.group(1) not in self.repos:
            return self._error(h, "RepoNotFound")
        repo, _, filename = m.groups()
        commit = hashlib.sha1(repo.encode()).hexdigest()
        if filename not in self.repos[repo]:
            return self._error(h, "EntryNotFound", commit)
        data = self.repos[repo][filename]
        h.send_response(200)
        h.send_header("X-Repo-Commit", commit)
        if filename.endswith(LFS_SUFFIXES):
            h.send_header("X-Linked-Etag", f'"{sha256(data)}"')
            h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("ETag", f'"{blob_name(filename, data)}"')
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            if filename in self.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            h.wfile.write(data)

    @staticmethod
    def _error(h, code, commit=None):
        h.send_response(404)
        h.send_header("X-Error-Code", code)
        if commit:
            h.send_header("X-Repo-Commit", commit)
        h.send_header("Content-Length", "0")
        h.end_headers()


@pytest.fixture
def fake_hub(monkeypatch):
    """fake_hub(repos, corrupt=...) -> a running FakeHub that huggingface_hub and hub.py use.
    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import: patch its constants
    (and the endpoint its module-level HfApi, behind file_exists, copied from them)."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    hubs = []

    def start(repos, **kwargs):
        fake = FakeHub(repos, **kwargs)
        hubs.append(fake)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_api.api, "endpoint", fake.url)
        return fake

    yield start
    for fake in hubs:
        fake.close()


def test_from_pretrained_downloads_once_then_works_offline(tmp_path, fake_hub, monkeypatch, sha_calls):
    files = model_files(tmp_path)
    fake = fake_hub({"acme/tiny": files})
    model = GPT2.from_pretrained("acme/tiny")
    assert ("GET", "/acme/tiny/resolve/main/model.safetensors") in fake.file_requests()
    assert len(sha_calls) == 1  # the downloaded blob was checked against its sha256 name
    n_requests = len(fake.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = GPT2.from_pretrained("acme/tiny")
    assert len(fake.requests) == n_requests  # from the cache, no request at all
    assert len(sha_calls) == 1  # and no second hash
    np.testing.assert_array_equal(model(IDS).logits, again(IDS).logits)


def test_a_download_damaged_on_the_way_is_refused(tmp_path, fake_hub):
    fake_hub({"acme/tiny": model_files(tmp_path)}, corrupt={"model.safetensors"})
    with pytest.raises(CheckpointError, match="acme/tiny's model.safetensors has [0-9a-f]{64}: the file is corrupted"):
        GPT2.from_pretrained("acme/tiny")


def test_a_download_that_is_not_the_known_file_is_refused(tmp_path, fake_hub, monkeypatch):
    files = model_files(tmp_path)
    monkeypatch.setitem(
        hub.KNOWN_FILES, ("acme/tiny", "model.safetensors"), (len(files["model.safetensors"]), "1" * 64)
    )
    fake_hub({"acme/tiny": files})
    with pytest.raises(CheckpointError, match="but acme/tiny's model.safetensors has 1{64}"):
        GPT2.from_pretrained("acme/tiny")
    assert GPT2.from_pretrained("acme/tiny", verify=False).config == CONFIG


def test_an_unknown_repo_on_a_reachable_hub(fake_hub):
    fake_hub({})
    with pytest.raises(
        ModelNotFoundError,
        match="'acme/nothing' is neither a local folder nor a model on the Hugging Face hub; known names: gpt2",
    ):
        GPT2.from_pretrained("acme/nothing")


def test_a_hub_repo_with_only_pytorch_model_bin_is_refused(tmp_path, fake_hub):
    fake = fake_hub({"acme/old": {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"}})
    with pytest.raises(
        CheckpointError, match="the hub repo acme/old has only pytorch_model.bin, a pickle file. gpt2np never unpickles"
    ):
        GPT2.from_pretrained("acme/old")
    assert ("GET", "/acme/old/resolve/main/pytorch_model.bin") not in fake.requests  # never even fetched


def test_a_hub_repo_without_weights(fake_hub):
    fake_hub({"acme/empty": {"README.md": b"hi"}})
    with pytest.raises(
        ModelNotFoundError, match=r"the hub repo acme/empty has none of config.json \+ model.safetensors"
    ):
        GPT2.from_pretrained("acme/empty")


def test_the_tokenizer_is_downloaded_from_either_file_set(tokenizer_dir, tmp_path, fake_hub):
    vocab_merges = {f: (tokenizer_dir / f).read_bytes() for f in ("vocab.json", "merges.txt")}
    Tokenizer.from_vocab_and_merges(tokenizer_dir / "vocab.json", tokenizer_dir / "merges.txt").backend.save(
        str(tmp_path / "tokenizer.json")
    )
    fake_hub({"acme/a": vocab_merges, "acme/b": {"tokenizer.json": (tmp_path / "tokenizer.json").read_bytes()}})
    for repo in ("acme/a", "acme/b"):
        assert Tokenizer.from_pretrained(repo).encode("My dog is") == [3666, 3290, 318], repo


def test_download_fills_a_folder_that_then_loads_offline(tmp_path, tokenizer_dir, fake_hub, monkeypatch):
    files = model_files(tmp_path)
    files |= {f: (tokenizer_dir / f).read_bytes() for f in ("vocab.json", "merges.txt")}
    files["pytorch_model.bin"] = b"never fetched"
    fake = fake_hub({"acme/tiny": files})
    dest = hub.download("acme/tiny", dest=tmp_path / "dest")
    assert dest == tmp_path / "dest"
    for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        assert (dest / f).read_bytes() == files[f]
    assert not (dest / "pytorch_model.bin").exists()
    assert not any(p.endswith("pytorch_model.bin") for _, p in fake.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert GPT2.from_pretrained(dest).config == CONFIG
    assert Tokenizer.from_pretrained(dest).encode("My dog is") == [3666, 3290, 318]


def test_download_into_weights_is_found_by_name(tmp_path, fake_hub, monkeypatch):
    fake_hub({"acme/tiny": model_files(tmp_path)})
    assert hub.download("acme/tiny") == tmp_path / "weights" / "acme/tiny"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        resolve_model_files("acme/tiny")["model.safetensors"]
        == tmp_path / "weights" / "acme" / "tiny" / "model.safetensors"
    )


def test_download_verifies_known_files(tmp_path, fake_hub, monkeypatch):
    files = model_files(tmp_path)
    monkeypatch.setitem(
        hub.KNOWN_FILES, ("acme/tiny", "model.safetensors"), (len(files["model.safetensors"]), "2" * 64)
    )
    fake_hub({"acme/tiny": files})
    with pytest.raises(CheckpointError, match="but acme/tiny's model.safetensors has 2{64}: the file is corrupted"):
        hub.download("acme/tiny", dest=tmp_path / "dest")
    assert hub.download("acme/tiny", dest=tmp_path / "dest2", verify=False) == tmp_path / "dest2"


def test_download_checks_large_files_against_the_hubs_sha256(tmp_path, fake_hub, sha_calls):
    """huggingface_hub does not check a downloaded file against the sha256 the hub announced
    (its ETag); `download` does, for every large file, known or not."""
    files = model_files(tmp_path)
    fake_hub({"acme/tiny": files})
    hub.download("acme/tiny", dest=tmp_path / "good")
    assert [p.name for p in sha_calls] == ["model.safetensors"]


def test_download_refuses_a_file_damaged_on_the_way(tmp_path, fake_hub):
    files = model_files(tmp_path)
    fake_hub({"acme/tiny": files}, corrupt={"model.safetensors"})
    with pytest.raises(
        CheckpointError,
        match=f"but acme/tiny's model.safetensors has {sha256(files['model.safetensors'])}: the file is corrupted; delete it",
    ):
        hub.download("acme/tiny", dest=tmp_path / "dest")
    assert hub.download("acme/tiny", dest=tmp_path / "dest2", verify=False) == tmp_path / "dest2"


def test_download_does_not_copy_a_damaged_cache_blob_silently(tmp_path, hf_home, fake_hub):
    """huggingface_hub fills `dest` from its cache when it holds a blob of that sha256; a
    damaged blob there must not slip into weights/ unchecked."""
    files = model_files(tmp_path)
    damaged = bytearray(files["model.safetensors"])
    damaged[-1] ^= 1
    add_to_hub_cache(
        hf_home,
        "acme/tiny",
        {"model.safetensors": bytes(damaged)},
        blob_names={"model.safetensors": sha256(files["model.safetensors"])},
    )
    fake_hub({"acme/tiny": files})
    with pytest.raises(CheckpointError, match="the file is corrupted"):
        hub.download("acme/tiny", dest=tmp_path / "dest")


def test_download_of_a_pickle_only_repo_is_refused(fake_hub, tmp_path):
    fake_hub({"acme/old": {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"}})
    with pytest.raises(CheckpointError, match="the hub repo acme/old has only pytorch_model.bin"):
        hub.download("acme/old", dest=tmp_path / "dest")
    assert not (tmp_path / "dest" / "pytorch_model.bin").exists()


def test_download_of_an_unknown_repo(fake_hub, tmp_path):
    fake_hub({})
    with pytest.raises(ModelNotFoundError, match="'acme/nothing' is not a model on the Hugging Face hub"):
        hub.download("acme/nothing", dest=tmp_path / "dest")
