"""Where a model's files come from, and proof that they are the right ones.

`resolve_model_files("gpt2")` looks, in this order:
1. a local folder, if the name is one (`./my-gpt2`, `/data/gpt2`);
2. the project's `weights/<name>/` (filled by `gpt2np download <name>`);
3. the Hugging Face cache (HF_HOME / HF_HUB_CACHE): a gpt2 that transformers already
   downloaded is used as it is, with no network access;
4. a download from the hub with `huggingface_hub`, of the needed files only, unless
   HF_HUB_OFFLINE is set.

GPT-2's tokenizer is the same for all five GPT-2 models and ships inside the package
(gpt2np/tokenizer_files/: vocab.json + merges.txt, 1.5 MB), so `resolve_tokenizer_files("gpt2")`
needs neither the network nor a cache. A model folder that has no tokenizer files but whose
config.json has GPT-2's vocabulary (50257 tokens) gets it too.

Known files (GPT-2's weights and tokenizer) are checked against their published size and
sha256 the first time we see them; so is any file in the hub cache, whose blob is named by
its sha256. A successful check is remembered (by path, size, mtime, ctime, inode and a sample of
the content: checkpoint.py) so it costs once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .checkpoint import is_remembered, remember, sha256_of
from .config import read_config_json
from .errors import CheckpointError, ModelNotFoundError

# The short names people use, and the hub repositories that hold them.
HUB_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}

# Published (size in bytes, sha256) of files we know. All five models share one tokenizer.
GPT2_TOKENIZER_FILES = {
    "vocab.json": (1042301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "merges.txt": (456318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
KNOWN_FILES = {
    ("openai-community/gpt2", "model.safetensors"): (
        548105171,
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
    ),
    **{(repo, f): v for repo in HUB_REPOS.values() for f, v in GPT2_TOKENIZER_FILES.items()},
}

# GPT-2's own tokenizer files, shipped as package data (pyproject.toml: package-data).
PACKAGED_TOKENIZER = Path(__file__).resolve().parent / "tokenizer_files"
GPT2_VOCAB_SIZE = 50257  # a config.json with this vocabulary is taken to use GPT-2's tokenizer

# Groups of files: any one group, complete, will do.
FileGroups = list[tuple[str, ...]]
MODEL_FILES: FileGroups = [("config.json", "model.safetensors")]
TOKENIZER_FILES: FileGroups = [("vocab.json", "merges.txt"), ("tokenizer.json",)]  # either set will do
DOWNLOAD_FILES = [
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "generation_config.json",
]


def weights_dir() -> Path:
    """The project's weights/ folder (or $GPT2NP_WEIGHTS)."""
    if os.environ.get("GPT2NP_WEIGHTS"):
        return Path(os.environ["GPT2NP_WEIGHTS"])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():  # running from a checkout (editable install)
        return checkout / "weights"
    return Path.cwd() / "weights"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (huggingface_hub
    reads it once at import, which would ignore a later HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def canonical_repo(name: str) -> str:
    return HUB_REPOS.get(name, name)


def _pick(folder: Path, groups: FileGroups) -> dict[str, Path] | None:
    for group in groups:
        if all((folder / f).is_file() for f in group):
            return {f: folder / f for f in group}
    return None


def _describe(groups: FileGroups) -> str:
    return " or ".join(" + ".join(g) for g in groups)


def _refuse_pickle(where: str) -> CheckpointError:
    return CheckpointError(
        f"{where} has only pytorch_model.bin, a pickle file. gpt2np never unpickles: loading a pickle can run "
        "arbitrary code. Convert it once to model.safetensors (e.g. with transformers: "
        "GPT2LMHeadModel.from_pretrained(path).save_pretrained(path, safe_serialization=True)) and try again."
    )


def looks_like_path(name: str | Path) -> bool:
    """Is `name` meant as a folder rather than a hub repo id ("owner/name")? A Path, anything
    starting with ".", "/" or "~", more than one "/", a backslash, or an "a/b" whose "a" is a
    folder here (`weights/tiny` run from the checkout): a hub id has exactly one "/"."""
    if isinstance(name, Path):
        return True
    text = str(name)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or text.endswith("/"):
        return True
    return "/" in text and Path(text).expanduser().parent.is_dir()


def _no_such_folder(text: str) -> ModelNotFoundError:
    folder = Path(text).expanduser()
    shown = text if text.startswith((".", "/", "~")) or os.path.isabs(text) else f"./{text}"
    if folder.exists():
        return ModelNotFoundError(
            f"{shown} is a file, not a folder; give the model's folder (config.json + model.safetensors)"
        )
    where = folder.parent  # a typo is usually in the last part: show what its folder holds
    hint = ""
    if where.is_dir() and where != Path(".") and where != Path(folder.anchor or "."):
        here = sorted(p.name for p in where.iterdir() if p.is_dir() and not p.name.startswith("."))[:8]
        hint = f" ({where} exists and holds {', '.join(here) if here else 'no folders'})"
    return ModelNotFoundError(
        f"no folder {shown}{hint}; give an existing model folder (config.json + model.safetensors) or a model name such as 'gpt2'"
    )


def resolve_files(
    name: str | Path, groups: FileGroups, verify: bool = True, local_files_only: bool = False
) -> dict[str, Path]:
    """Find one of the file `groups` (tuples of names) for model `name`, as described above."""
    text = str(name)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _from_folder(folder, groups, verify, text)
    if looks_like_path(name):
        raise _no_such_folder(text)
    local = weights_dir() / text
    if local.is_dir() and _pick(local, groups):
        return _from_folder(local, groups, verify, text)
    return _from_hub(text, groups, verify, local_files_only or hub_offline())


def _from_folder(folder: Path, groups: FileGroups, verify: bool, name: str) -> dict[str, Path]:
    found = _pick(folder, groups)
    if found is None:
        if "model.safetensors" in _describe(groups) and (folder / "pytorch_model.bin").is_file():
            raise _refuse_pickle(str(folder))
        missing = [f for f in groups[0] if not (folder / f).is_file()]
        raise ModelNotFoundError(f"{folder} lacks {', '.join(missing)} (a model folder needs {_describe(groups)})")
    if verify:
        for filename, path in found.items():
            verify_file(path, canonical_repo(name), filename)
    return found


def _from_hub(name: str, groups: FileGroups, verify: bool, offline: bool) -> dict[str, Path]:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    cache = hub_cache_dir()
    repo = canonical_repo(name)
    candidates = [name] + [r for r in (repo,) if r != name] + [k for k, v in HUB_REPOS.items() if v == name]
    try:
        for candidate in candidates:  # 1. already cached (by us, or by transformers under either name)?
            for group in groups:
                paths = [try_to_load_from_cache(candidate, f, cache_dir=cache) for f in group]
                if all(isinstance(p, str) for p in paths):
                    found = {f: Path(p) for f, p in zip(group, paths)}  # type: ignore[arg-type]  # all str: see above
                    if verify:
                        for f, p in found.items():
                            verify_file(p, repo, f)
                    return found
    except HFValidationError:
        raise ModelNotFoundError(
            f"{name!r} is not a model folder, not in {weights_dir()}, and not a valid hub repo id; "
            f"known names: {', '.join(HUB_REPOS)}"
        ) from None
    cached_pickle = any(
        isinstance(try_to_load_from_cache(c, "pytorch_model.bin", cache_dir=cache), str) for c in candidates
    )
    if "model.safetensors" in _describe(groups) and cached_pickle:
        raise _refuse_pickle(f"the cached hub repo {repo}")
    if offline:
        raise ModelNotFoundError(
            f"{name!r} is not downloaded and HF_HUB_OFFLINE is set: it is not in {weights_dir() / name} nor in "
            f"the Hugging Face cache {cache}. Run `gpt2np download {name}` on a machine with network (then copy "
            f"weights/{name}/ here), or unset HF_HUB_OFFLINE."
        )
    if not hub_reachable():
        raise _unreachable(name, cache)
    for group in groups:  # 2. download what is missing
        try:
            found = {f: Path(hf_hub_download(repo, f, cache_dir=cache)) for f in group}
        except LocalEntryNotFoundError:  # huggingface_hub's word for "no network and not cached"
            raise _unreachable(name, cache) from None
        except EntryNotFoundError:
            continue  # this repo lacks this group; try the next one
        except RepositoryNotFoundError:
            raise ModelNotFoundError(
                f"{name!r} is neither a local folder nor a model on the Hugging Face hub; known names: {', '.join(HUB_REPOS)}"
            ) from None
        if verify:
            for f, p in found.items():
                verify_file(p, repo, f)
        return found
    if "model.safetensors" in _describe(groups) and _hub_has_file(repo, "pytorch_model.bin"):
        raise _refuse_pickle(f"the hub repo {repo}")
    raise ModelNotFoundError(f"the hub repo {repo} has none of {_describe(groups)}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the hub at all? huggingface_hub retries a failed request
    five times with back-off (about 25 s per file); without network we say so at once."""
    import socket
    from urllib.parse import urlparse

    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return True  # behind a proxy a direct connection proves nothing: let huggingface_hub try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _unreachable(name: str, cache: Path) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"cannot get {name!r}: the Hugging Face hub is unreachable from this machine and the files are neither in "
        f"{weights_dir() / name} nor in the Hugging Face cache {cache}. Run `gpt2np download {name}` on a machine "
        f"with network and copy weights/{name}/ here."
    )


def _download_unreachable(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"cannot download {name!r}: the Hugging Face hub ({os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}) "
        f"is unreachable from this machine; run `gpt2np download {name}` where it is reachable and copy "
        f"weights/{name}/ here"
    )


def _hub_has_file(repo: str, filename: str) -> bool:
    from huggingface_hub import file_exists

    try:
        return file_exists(repo, filename)
    except Exception:  # noqa: BLE001  (only used to choose the better error message)
        return False


def resolve_model_files(name: str | Path, verify: bool = True, local_files_only: bool = False) -> dict[str, Path]:
    return resolve_files(name, MODEL_FILES, verify=verify, local_files_only=local_files_only)


def resolve_tokenizer_files(name: str | Path, verify: bool = True, local_files_only: bool = False) -> dict[str, Path]:
    """GPT-2's own tokenizer (shipped with gpt2np) for the five GPT-2 names; else the files of
    a folder or hub repo, as for a model. A model folder without tokenizer files uses GPT-2's
    own when its config.json has GPT-2's vocabulary."""
    if isinstance(name, str) and (name in HUB_REPOS or name in HUB_REPOS.values()) and not Path(name).is_dir():
        return packaged_tokenizer_files(verify)
    folder = Path(name).expanduser()
    # (Whatever the weights' format: a folder with a pytorch_model.bin as well gets GPT-2's
    # tokenizer too, and loading its model is what refuses the pickle.)
    if folder.is_dir() and _pick(folder, TOKENIZER_FILES) is None:
        vocab_size = _config_vocab_size(folder)
        if vocab_size == GPT2_VOCAB_SIZE:
            return packaged_tokenizer_files(verify)
        said = (
            "has no config.json"
            if not (folder / "config.json").exists()
            else f"config.json has {vocab_size} tokens, not GPT-2's {GPT2_VOCAB_SIZE}"
            if vocab_size is not None
            else "config.json has no vocab_size"
        )
        raise ModelNotFoundError(
            f"{folder} has no tokenizer files ({_describe(TOKENIZER_FILES)}), and GPT-2's own tokenizer, used by default "
            f"for a model whose config.json has GPT-2's vocabulary, does not fit: {said}. Give the folder that holds "
            "this model's tokenizer (--tokenizer FOLDER on the command line, Tokenizer.from_pretrained(FOLDER) in Python)"
        )
    return resolve_files(name, TOKENIZER_FILES, verify=verify, local_files_only=local_files_only)


def packaged_tokenizer_files(verify: bool = True) -> dict[str, Path]:
    """vocab.json + merges.txt of GPT-2, from inside the package (checked like downloaded ones)."""
    found = {f: PACKAGED_TOKENIZER / f for f in GPT2_TOKENIZER_FILES}
    missing = [f for f, p in found.items() if not p.is_file()]
    if missing:
        raise ModelNotFoundError(
            f"GPT-2's tokenizer files {', '.join(missing)} are missing from {PACKAGED_TOKENIZER}: gpt2np is not fully "
            "installed; reinstall it (pip install -e . from a checkout)"
        )
    if verify:
        for filename, path in found.items():
            verify_file(path, HUB_REPOS["gpt2"], filename)
    return found


def _config_vocab_size(folder: Path) -> int | None:
    """vocab_size of folder/config.json; None when it has none (or there is no config.json). A
    config.json that cannot be read (empty, not JSON, not an object) is a ConfigError saying so."""
    if not (folder / "config.json").exists():
        return None
    value = read_config_json(folder / "config.json").get("vocab_size")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- integrity -----------------------------------------------------------------------------


def expected_digest(path: Path, repo: str, filename: str, sha256: str | None = None) -> tuple[int | None, str] | None:
    """(size, sha256) the file must have, if we know it: from our table, from the hub's word
    for it (`sha256`, a large file's ETag), or from the hub cache, where a large file's blob
    is named by its sha256."""
    if (repo, filename) in KNOWN_FILES:
        return KNOWN_FILES[(repo, filename)]
    if sha256 is not None:
        return None, sha256
    blob = path.resolve().name
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", blob):
        return None, blob
    return None


def verify_file(path: Path, repo: str, filename: str, sha256: str | None = None) -> None:
    """Refuse a known file whose size or sha256 is not the published one. Hashing happens once
    per file version: the result is remembered (checkpoint.remember)."""
    expected = expected_digest(Path(path), repo, filename, sha256)
    if expected is None:
        return
    size, digest = expected
    path = Path(path)
    stat = path.stat()
    how_to_fix = (
        "delete it and download it again (gpt2np download), or pass verify=False / --no-verify to use it anyway"
    )
    if size is not None and stat.st_size != size:
        raise CheckpointError(
            f"{path} is {stat.st_size} bytes but {repo}'s {filename} is {size} bytes: it is truncated or not the "
            f"official file; {how_to_fix}"
        )
    if is_remembered(path, "verified", digest):
        return
    actual = sha256_of(path)
    if actual != digest:
        raise CheckpointError(
            f"{path} has sha256 {actual} but {repo}'s {filename} has {digest}: the file is corrupted; {how_to_fix}"
        )
    remember(path, "verified", digest)


def download(name: str, dest: Path | None = None, verify: bool = True) -> Path:
    """Put a model's files in weights/<name>/ (with huggingface_hub's progress bars), so the
    checkout works offline afterwards. Only the files gpt2np uses are fetched."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo = canonical_repo(name)
    dest = Path(dest) if dest is not None else weights_dir() / name
    if hub_offline():
        raise ModelNotFoundError(f"cannot download {name!r}: HF_HUB_OFFLINE is set; unset it on a machine with network")
    if not hub_reachable():
        raise _download_unreachable(name)
    fetched = {}
    for filename in DOWNLOAD_FILES:
        try:
            # cache_dir: huggingface_hub copies a file it already has in its cache instead of
            # downloading it; name the cache the environment names now, as _from_hub does.
            fetched[filename] = Path(hf_hub_download(repo, filename, local_dir=dest, cache_dir=hub_cache_dir()))
        except LocalEntryNotFoundError:
            raise _download_unreachable(name) from None
        except EntryNotFoundError:
            continue  # an optional file this repo does not have
        except RepositoryNotFoundError:
            raise ModelNotFoundError(
                f"{name!r} is not a model on the Hugging Face hub; known names: {', '.join(HUB_REPOS)}"
            ) from None
    if "model.safetensors" not in fetched:
        if _hub_has_file(repo, "pytorch_model.bin"):
            raise _refuse_pickle(f"the hub repo {repo}")
        raise ModelNotFoundError(f"the hub repo {repo} has no model.safetensors")
    if verify:
        for filename, path in fetched.items():
            verify_file(path, repo, filename, sha256=_downloaded_sha256(dest, filename))
    return dest


def _downloaded_sha256(dest: Path, filename: str) -> str | None:
    """The sha256 the hub announced for a large (LFS) file downloaded into `dest`.

    In the hub cache a blob is named by it; in a plain folder huggingface_hub keeps it (the
    file's ETag) in dest/.cache/huggingface/. It does not check the bytes against it, so we do."""
    try:
        from huggingface_hub._local_folder import read_download_metadata

        metadata = read_download_metadata(Path(dest), filename)
    except Exception:  # noqa: BLE001  a private helper: if it moves, we fall back to the known-files table
        return None
    etag = getattr(metadata, "etag", None)
    return etag if isinstance(etag, str) and re.fullmatch(r"[0-9a-f]{64}", etag) else None
