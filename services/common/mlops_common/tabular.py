"""The first step of every tabular model: raw feature columns in, numeric features (with derived ones) out.

It lives in the shared package because it is part of the pickled model: the predictor must import it to
load a tabular model. Derived features come from the spec's ``data.derived``:
``haversine_km: [lat1, lon1, lat2, lon2]`` adds the great-circle distance in km, and
``datetime: <column>`` replaces that column with ``<column>_hour`` and ``<column>_weekday``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

EARTH_RADIUS_KM = 6371.0


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=float)) for a in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    distance: np.ndarray = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    return distance


class TabularFeatures(TransformerMixin, BaseEstimator):
    """Numeric matrix from raw columns: numeric columns as floats (unparseable values become NaN), plus
    the derived features. Accepts a DataFrame or a list of dicts (one per row)."""

    def __init__(self, feature_columns: Sequence[str] = (), haversine: Sequence[str] | None = None,
                 datetime_column: str | None = None) -> None:
        self.feature_columns = feature_columns
        self.haversine = haversine
        self.datetime_column = datetime_column

    def fit(self, X: object, y: object = None) -> TabularFeatures:
        self.feature_names_ = self.output_names()
        return self

    def output_names(self) -> list[str]:
        names = [c for c in self.feature_columns if c != self.datetime_column]
        if self.haversine:
            names.append("haversine_km")
        if self.datetime_column:
            names += [f"{self.datetime_column}_hour", f"{self.datetime_column}_weekday"]
        return names

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array(self.output_names(), dtype=object)

    def frame(self, X: object) -> pd.DataFrame:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        out = pd.DataFrame(index=frame.index)
        for col in self.feature_columns:
            if col == self.datetime_column:
                continue
            out[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else np.nan
        if self.haversine:
            parts = [pd.to_numeric(frame[c], errors="coerce") for c in self.haversine]
            out["haversine_km"] = haversine_km(*parts)
        if self.datetime_column:
            when = pd.to_datetime(frame[self.datetime_column], errors="coerce", utc=True, format="mixed")
            out[f"{self.datetime_column}_hour"] = when.dt.hour.astype(float)
            out[f"{self.datetime_column}_weekday"] = when.dt.weekday.astype(float)
        return out.astype(float)

    def transform(self, X: object) -> np.ndarray:
        matrix: np.ndarray = self.frame(X).to_numpy(dtype=float)
        return matrix
