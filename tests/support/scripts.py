"""The repository's stand-alone scripts (docker/*, infra/grafana/*) imported as modules, for tests of their code."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """The script at ``relative_path`` (from the repository root) as a module, registered in ``sys.modules`` under
    ``name`` (its file name by default) so that its dataclasses and pickles can look it up."""
    name = name or Path(relative_path).stem
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    assert spec is not None and spec.loader is not None, relative_path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
