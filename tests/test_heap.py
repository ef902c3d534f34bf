"""gpt2np/heap.py: building a model tunes glibc's malloc so a forward's temporaries stop page-faulting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gpt2np import GPT2, heap
from gpt2np.errors import InputError

# A block's worth of a 1x128 forward's arrays, made and freed as GPT2 does (a float64 stream that
# lives on; float32 layer outputs, attention scores and the MLP's wider arrays that do not), with
# the page faults of the second and later passes counted.
FORWARD_LIKE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from gpt2np import GPT2, heap
    GPT2.from_pretrained(sys.argv[1])  # building a model is what tunes malloc
    def forward_like():
        x = np.ones((128, 768))  # the residual stream, float64
        for _ in range(12):
            h = x.astype(np.float32)
            qkv = np.ones((128, 2304), np.float32)
            scores = np.ones((12, 128, 128), np.float32)
            del qkv, scores
            f = np.ones((128, 3072), np.float32)
            g = f * 2
            del f, g, h
    forward_like()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        forward_like()
    print(heap._tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(model_folder, tune: str) -> tuple[str, int]:
    """(heap._tuned, page faults of 5 forward-like passes) in a fresh process, GPT2NP_TUNE_MALLOC=tune."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own knobs would interfere
    out = subprocess.run(
        [sys.executable, "-c", FORWARD_LIKE, str(model_folder)],
        env=env | {"GPT2NP_TUNE_MALLOC": tune},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not heap.is_glibc(), reason="the tuning is glibc's mallopt; this C library is not glibc")
def test_a_built_model_stops_the_page_faults_that_default_malloc_makes(model_dir):
    tuned, faults = page_faults(model_dir("tiny"), "1")
    untouched, default_faults = page_faults(model_dir("tiny"), "0")
    assert (tuned, untouched) == ("True", "False")
    assert default_faults > 10_000  # measured 44,352 here: every large array zero-filled anew
    assert faults < 100  # measured 0


@pytest.mark.parametrize("value", ["yes", "2", " true"])
def test_a_bad_setting_is_a_clear_error_when_a_model_is_built(monkeypatch, model_dir, value):
    monkeypatch.setattr(heap, "_tuned", None)  # as in a fresh process
    monkeypatch.setenv("GPT2NP_TUNE_MALLOC", value)
    with pytest.raises(InputError, match=r"GPT2NP_TUNE_MALLOC=.*expected 1 .* or 0"):
        GPT2.from_pretrained(model_dir("tiny"))


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(heap, "_tuned", None)
    monkeypatch.delenv("GPT2NP_TUNE_MALLOC", raising=False)
    monkeypatch.setattr(heap, "is_glibc", lambda: False)

    def no_c_library(*args):
        raise AssertionError("tune_malloc looked for mallopt on a C library that is not glibc")

    monkeypatch.setattr(heap.ctypes, "CDLL", no_c_library)
    assert heap.tune_malloc() is False
