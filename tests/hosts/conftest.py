"""The multi-host stack (tests/hosts/stack.py), built once for the module and torn down also on failure.

These tests take minutes, so a plain ``pytest`` (``make test``) deselects them; they run when tests/hosts (or a
file in it) is named on the command line, as ``make test-hosts`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts import network
from tests.hosts.stack import Stack
from tests.support.selection import deselect_unless_named

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hosts: the stack on several hosts made of network namespaces (root)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_unless_named(config, items, HERE, "hosts")


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    reason = network.why_unavailable()
    if reason:
        pytest.skip(reason)
    built = Stack(log_dir)
    try:
        built.up()
        yield built
    finally:
        built.close()
