"""gpt2np: GPT-2 from scratch in NumPy.

    from gpt2np import GPT2, Tokenizer
    tok = Tokenizer.from_pretrained("gpt2")
    tok.padding_side = "left"; tok.pad_token = tok.eos_token
    batch = tok(["It will rain in the", "My dog is"], padding=True)
    model = GPT2.from_pretrained("gpt2")
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=5)
    print(tok.batch_decode(ids, skip_special_tokens=True))

GPT-2 on one page, the plain math without the speed-ups (tested equal to GPT2):
    from gpt2np import plain
    logits = plain.forward(model.weights, model.config, batch["input_ids"], batch["attention_mask"])

The loss and every gradient (plain_backward.loss_and_grads is the same on one page):
    loss, grads = model.loss_and_grads(batch["input_ids"], attention_mask=batch["attention_mask"])

README.md and docs/ say the rest.
"""

from . import plain, plain_backward
from .config import GPT2Config
from .errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    GPT2npError,
    InputError,
    ModelError,
    ModelNotFoundError,
)
from .model import GPT2, GPT2Output
from .tokenizer import BatchEncoding, Tokenizer

# Two lines, the model API then the errors (hence the noqa and fmt: skip): clearer than ten sorted.
__all__ = [  # noqa: RUF022
    "GPT2", "GPT2Config", "GPT2Output", "Tokenizer", "BatchEncoding", "plain", "plain_backward",
    "GPT2npError", "InputError", "ConfigError", "CheckpointError", "ModelNotFoundError", "ModelError", "GenerationError",
]  # fmt: skip
__version__ = "0.1.0"
