"""The notebooks in notebooks/ are exactly what their generator, notebooks/build.py, writes (so an edit made in
one place only is caught), and there are the three of them.

Not yet: executing them with nbclient against the session's real stack (MLflow, registry-proxy, trainer-api
with a worker, a predictor). That test was written but could not be run to its end on the shared machine before
this step landed, so it stays out until it has passed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ORDER = ["01-train-and-compare.ipynb", "02-predict-and-feedback.ipynb", "03-govern.ipynb"]


def test_the_notebooks_are_what_their_generator_writes() -> None:
    result = subprocess.run([sys.executable, str(NOTEBOOKS / "build.py"), "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ORDER
