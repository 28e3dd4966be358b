"""Validate a dataset against its spec, clean it, and split it (deterministic for a snapshot and a seed).

:func:`prepare` is the training path (clean + split); :func:`features_and_target` cleans a whole frame the
same way without splitting it (to score a golden set); :func:`raw_test_rows` gives the raw rows of a
prepared test split (to snapshot them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlops_common.names import TEXT_CLASSIFICATION
from mlops_common.spec import ModelSpec


class ValidationFailed(ValueError):
    """The dataset cannot train this spec; the message says exactly why."""


# Share of unparseable values above which a numeric column is refused rather than imputed.
MAX_BAD_NUMERIC = 0.01


@dataclass
class Prepared:
    inputs: list[str]
    X_train: pd.DataFrame
    X_val: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    rows_total: int
    dropped: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    # Positions (in the frame given to :func:`prepare`) of the test split's rows, in the split's order.
    test_positions: np.ndarray | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {"rows_total": self.rows_total, "rows_train": len(self.X_train), "rows_validation": len(self.X_val),
                "rows_test": len(self.X_test), "rows_dropped": sum(self.dropped.values())}


def _missing(frame: pd.DataFrame, needed: list[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise ValidationFailed(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(the file has: {have})"
        )


def _example_bad(raw: pd.Series, parsed: pd.Series) -> Any:
    bad = raw[parsed.isna() & raw.notna()]
    return bad.iloc[0] if len(bad) else None


def clean_text(spec: ModelSpec, frame: pd.DataFrame, training: bool = True) -> tuple[pd.DataFrame, dict[str, int]]:
    text, label = spec.data.text_column, spec.data.label_column
    assert text and label
    _missing(frame, [text, label])
    if frame.empty:
        raise ValidationFailed("the dataset has no rows (only a header)")
    if frame[label].isna().all():
        raise ValidationFailed(f"label column {label!r} is empty: every value is null")
    dropped = {"null_label": int(frame[label].isna().sum()),
               "null_text": int((frame[label].notna() & frame[text].isna()).sum())}
    frame = frame[frame[label].notna() & frame[text].notna()].copy()
    frame[text] = frame[text].astype(str)
    frame[label] = frame[label].astype(str)
    classes = frame[label].value_counts()
    if training and len(classes) < 2:
        raise ValidationFailed(f"label column {label!r} has a single class ({classes.index[0]!r}): "
                               "a classifier needs at least two")
    return frame, {k: v for k, v in dropped.items() if v}


def clean_tabular(spec: ModelSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    features, target = list(spec.data.feature_columns or []), spec.data.target_column
    assert target
    derived = spec.data.derived or {}
    _missing(frame, [*features, target, *(derived.get("haversine_km") or [])])
    if frame.empty:
        raise ValidationFailed("the dataset has no rows (only a header)")
    y = pd.to_numeric(frame[target], errors="coerce")
    if frame[target].isna().all():
        raise ValidationFailed(f"target column {target!r} is empty: every value is null")
    bad = _example_bad(frame[target], y)
    if bad is not None and (y.isna() & frame[target].notna()).mean() > MAX_BAD_NUMERIC:
        raise ValidationFailed(f"target column {target!r} must be numeric (found {bad!r})")
    frame = frame.copy()
    frame[target] = y
    dt_col = derived.get("datetime")
    for col in features:
        if col == dt_col:
            parsed = pd.to_datetime(frame[col], errors="coerce", utc=True, format="mixed")
            if (parsed.isna() & frame[col].notna()).mean() > MAX_BAD_NUMERIC:
                example = _example_bad(frame[col], parsed)
                raise ValidationFailed(f"column {col!r} must hold dates and times (found {example!r})")
            continue
        parsed = pd.to_numeric(frame[col], errors="coerce")
        share_bad = (parsed.isna() & frame[col].notna()).mean()
        if share_bad > MAX_BAD_NUMERIC:
            example = _example_bad(frame[col], parsed)
            raise ValidationFailed(f"feature column {col!r} must be numeric (found {example!r})")
        frame[col] = parsed
    dropped: dict[str, int] = {}
    keep = frame[target].notna()
    dropped["null_target"] = int((~keep).sum())
    if "target_min" in derived:
        low = keep & (frame[target] < float(derived["target_min"]))
        dropped["target_below_min"] = int(low.sum())
        keep &= ~low
    if "target_max" in derived:
        high = keep & (frame[target] > float(derived["target_max"]))
        dropped["target_above_max"] = int(high.sum())
        keep &= ~high
    zero_cols = derived.get("drop_zero") or []
    _missing(frame, zero_cols)
    if zero_cols:
        zero = keep & (frame[zero_cols] == 0).any(axis=1)
        dropped["zero_values"] = int(zero.sum())
        keep &= ~zero
    frame = frame[keep]
    return frame, {k: v for k, v in dropped.items() if v}


def _clean(spec: ModelSpec, frame: pd.DataFrame, training: bool = True
           ) -> tuple[pd.DataFrame, dict[str, int], list[str], str]:
    """The cleaned frame (its index = positions in ``frame``), the dropped-row counts, inputs and target."""
    frame = frame.reset_index(drop=True)
    if spec.task == TEXT_CLASSIFICATION:
        frame, dropped = clean_text(spec, frame, training)
        inputs, target = [spec.data.text_column], spec.data.label_column
    else:
        frame, dropped = clean_tabular(spec, frame)
        inputs, target = list(spec.data.feature_columns or []), spec.data.target_column
    assert target is not None and all(inputs)
    return frame, dropped, inputs, target  # type: ignore[return-value]


def features_and_target(spec: ModelSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """A whole frame as (X, y), cleaned like :func:`prepare` but not split (e.g. a golden set to score):
    returns (X, y, dropped-row counts); :class:`ValidationFailed` when no usable row is left."""
    cleaned, dropped, inputs, target = _clean(spec, frame, training=False)
    if cleaned.empty:
        raise ValidationFailed(f"no usable row left after cleaning (dropped: {dropped or 'none'})")
    return cleaned[inputs].reset_index(drop=True), cleaned[target].to_numpy(), dropped


def raw_test_rows(frame: pd.DataFrame, prep: Prepared) -> pd.DataFrame:
    """The rows of ``prep``'s test split as they are in ``frame`` (the frame given to :func:`prepare`), with
    all its original columns and values, in the split's order."""
    if prep.test_positions is None:
        raise ValueError("this preparation does not know its test rows")
    return frame.iloc[prep.test_positions].reset_index(drop=True)


def prepare(spec: ModelSpec, frame: pd.DataFrame, min_rows: int) -> Prepared:
    rows_total = len(frame)
    text = spec.task == TEXT_CLASSIFICATION
    frame, dropped, inputs, target = _clean(spec, frame)
    if len(frame) < min_rows:
        raise ValidationFailed(f"too few rows: {len(frame)} usable row(s), at least {min_rows} are needed "
                               "for a train/validation/test split")
    split = spec.split
    y = frame[target].to_numpy()
    if text:
        counts = frame[target].value_counts()
        rare = counts[counts < 3]
        if len(rare):
            raise ValidationFailed(f"class {rare.index[0]!r} has {int(rare.iloc[0])} row(s): a stratified "
                                   "train/validation/test split needs at least 3 rows per class")
    positions = frame.index.to_numpy()
    X = frame[inputs].reset_index(drop=True)
    try:
        X_rest, X_test, y_rest, y_test = train_test_split(
            X, y, test_size=split.test_size, random_state=split.seed, stratify=y if text else None)
        val_share = split.validation_size / (1 - split.test_size)
        X_train, X_val, y_train, y_val = train_test_split(
            X_rest, y_rest, test_size=val_share, random_state=split.seed, stratify=y_rest if text else None)
    except ValueError as exc:
        raise ValidationFailed(f"too few rows for the split: {exc}") from exc
    ignored = [str(c) for c in frame.columns if c not in inputs and c != target]
    return Prepared(inputs, X_train, X_val, X_test, y_train, y_val, y_test, rows_total, dropped, ignored,
                    test_positions=positions[X_test.index.to_numpy()])
