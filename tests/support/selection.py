"""Tests that take minutes and run only when their folder is named on the command line (``make test-hosts``,
``make test-loop``); a plain ``pytest`` (``make test``) deselects them."""

from __future__ import annotations

from pathlib import Path

import pytest


def named(config: pytest.Config, folder: Path) -> bool:
    """Whether the command line names ``folder`` or something inside it."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == folder or folder in path.parents:
            return True
    return False


def deselect_unless_named(config: pytest.Config, items: list[pytest.Item], folder: Path, marker: str) -> None:
    """Deselects the items marked ``marker`` unless ``folder`` is named on the command line."""
    if named(config, folder):
        return
    marked = [item for item in items if item.get_closest_marker(marker)]
    if marked:
        config.hook.pytest_deselected(items=marked)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]
