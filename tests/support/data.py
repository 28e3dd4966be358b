"""Training data and specs for tests: samples of the real SMS set, and the text-classification spec around them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_common.settings import REPO_ROOT

SMS_CSV = REPO_ROOT / "data" / "sms_spam.csv"
# Two quick candidates: enough for the gate to pick the better, fast enough for a busy CI machine.
QUICK_CANDIDATES: list[dict[str, Any]] = [
    {"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg", "params": {"max_iter": 300}}},
    {"featurizer": {"type": "bow"}, "estimator": {"type": "naive_bayes"}},
]


def sms_subset(path: Path, rows: int = 400, seed: int = 1) -> Path:
    """A stratified sample of about ``rows`` rows of the real SMS set (the spam share kept), written to ``path``."""
    frame = pd.read_csv(SMS_CSV)
    sample = frame.groupby("label").sample(frac=rows / len(frame), random_state=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(path, index=False)
    return path


def sms(n: int = 600, offset: int = 0) -> tuple[list[str], list[str]]:
    """``n`` messages of the SMS set from row ``offset`` on, and their labels (in file order)."""
    with SMS_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[offset:offset + n]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def text_spec(uri: str | Path, threshold: float = 0.5, candidates: list[dict[str, Any]] | None = None,
              **sections: Any) -> dict[str, Any]:
    """A text-classification spec over ``uri`` (columns text and label), gated on f1_macro >= ``threshold``;
    ``sections`` adds or replaces top-level blocks (``drift={...}``, ``schedule="..."``)."""
    return {
        "task": "text-classification",
        "data": {"uri": str(uri), "text_column": "text", "label_column": "label"},
        "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": threshold},
        "candidates": candidates or QUICK_CANDIDATES,
        **sections,
    }
