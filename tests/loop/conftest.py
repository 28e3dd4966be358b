"""The loop scenario (test_loop.py, marker ``loop``) takes minutes: it runs when the command line names
tests/loop (``make test-loop``, which .ci/run runs after ``make test`` while CI is inside its budget), not in
``make test``. The rest of tests/loop always runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.selection import deselect_unless_named

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loop: the unattended drift-to-recovery scenario (make test-loop)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_unless_named(config, items, HERE, "loop")
