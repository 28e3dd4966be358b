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

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hosts: the stack on several hosts made of network namespaces (root)")


def _named(config: pytest.Config) -> bool:
    """Whether the command line names tests/hosts or something inside it."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _named(config):
        return
    hosts = [item for item in items if item.get_closest_marker("hosts")]
    if hosts:
        config.hook.pytest_deselected(items=hosts)
        items[:] = [item for item in items if not item.get_closest_marker("hosts")]


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
