"""The loop scenario (test_loop.py, marker ``loop``) takes minutes: it runs when the command line names
tests/loop (``make test-loop``, which .ci/run calls), not in ``make test``. The rest of tests/loop always runs."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loop: the unattended drift-to-recovery scenario (make test-loop)")


def _named(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _named(config):
        return
    loop = [item for item in items if item.get_closest_marker("loop")]
    if loop:
        config.hook.pytest_deselected(items=loop)
        items[:] = [item for item in items if not item.get_closest_marker("loop")]
