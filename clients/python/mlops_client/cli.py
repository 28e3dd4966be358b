"""The `mlops` command line (being moved here from the trainer package)."""

from trainer.cli import main

__all__ = ["main"]
