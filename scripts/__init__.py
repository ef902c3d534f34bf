"""The scripts around gpt2np (not part of the package): bench/, ci/, data/, docs/, experiments/ (docs/layout.md)."""
