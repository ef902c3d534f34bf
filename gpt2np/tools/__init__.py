"""The programs around the model: the `gpt2np` command and each of its subcommands, and the
random test models. They import the core library (gpt2np/*.py); the core never imports them."""
