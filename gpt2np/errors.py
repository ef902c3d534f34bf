"""The exceptions gpt2np raises.

Every message says what was wrong and how to fix it. Callers can catch `GPT2npError` for all of
them; the ones about bad arguments are also `ValueError`s, as Python programmers expect.
"""


class GPT2npError(Exception):
    """Base class of every error gpt2np raises on purpose."""


class InputError(GPT2npError, ValueError):
    """A bad argument: token ids, masks, lengths, generation or tokenizer settings."""


class ConfigError(GPT2npError, ValueError):
    """config.json is missing, not valid JSON, lacks a field or holds an impossible value."""


class CheckpointError(GPT2npError):
    """The weights file is unusable: truncated, corrupted, a missing or misshapen tensor,
    a checksum mismatch, or a pickle file (which we refuse to load)."""


class ModelNotFoundError(GPT2npError):
    """The model name matches no local folder, no file in weights/, nothing in the Hugging Face
    cache, and could not be downloaded."""


class ModelError(GPT2npError, FloatingPointError):
    """The forward pass produced NaN or inf from finite inputs and weights (float32 overflow, or a
    hook that wrote one): the message names the first point whose output is not finite."""


class GenerationError(ModelError):
    """Generation cannot go on: the model's logits for the next token are NaN or +inf."""


class MissingActivationError(InputError, KeyError):
    """cache[key] names a point the activation cache does not hold (not recorded, or no point of
    gpt2np at all). A KeyError too, so `except KeyError` and dict habits keep working."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class NotInGpt2npError(InputError, AttributeError):
    """A TransformerLens ActivationCache method gpt2np's cache does not offer (docs/cross-checking.md,
    section 6, lists what it does); an AttributeError too, so hasattr() still answers False."""
