"""A generator of NYC-taxi-like fares with month-by-month drift, in the Kaggle "New York City Taxi Fare
Prediction" columns (key, fare_amount, pickup_datetime, pickup/dropoff longitude and latitude,
passenger_count), for replaying the monthly retrain cycle.

The world it simulates: fares rise with the economy (about 2% a month), April brings a regime change
(a new congestion surcharge and a higher per-km rate), and June is a chaotic month (road works, noisy
fares) where no model meets the bar. About 1% of rows are impossible (zero coordinates, negative fares),
as in the real data.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_common.names import TABULAR_REGRESSION
from mlops_common.tabular import haversine_km

CENTER = (40.754, -73.984)  # Midtown Manhattan
FEATURES = ["pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude",
            "passenger_count"]


@dataclass(frozen=True)
class Regime:
    base: float
    per_km: float
    rush_surcharge: float
    noise: float


def regime(month: int) -> Regime:
    economy = 1.02 ** (month - 1)
    base, per_km, rush, noise = 2.5, 1.56, 1.0, 0.6
    if month >= 4:  # regime change: congestion surcharge and a new per-km rate
        base, per_km, rush = base + 2.5, per_km * 1.25, 2.0
    if month == 6:  # chaotic month: fares far less predictable
        noise = 4.5
    return Regime(base * economy, per_km * economy, rush * economy, noise)


def generate(month: int, rows: int = 5000, year: int = 2024, seed: int = 0) -> pd.DataFrame:
    if not 1 <= month <= 12:
        raise ValueError("month must be 1-12")
    rng = np.random.default_rng(seed * 100 + month)
    days = calendar.monthrange(year, month)[1]
    start = pd.Timestamp(year=year, month=month, day=1, tz="UTC")
    when = start + pd.to_timedelta(rng.uniform(0, days * 86400, rows), unit="s")
    lat = CENTER[0] + rng.normal(0, 0.03, rows)
    lon = CENTER[1] + rng.normal(0, 0.03, rows)
    km = rng.lognormal(np.log(2.5), 0.7, rows).clip(0.2, 40)
    angle = rng.uniform(0, 2 * np.pi, rows)
    dlat = lat + km * np.cos(angle) / 111.0
    dlon = lon + km * np.sin(angle) / (111.0 * np.cos(np.radians(lat)))
    passengers = rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 5, 6], rows)
    r = regime(month)
    hour = when.hour.to_numpy()
    rush = ((hour >= 16) & (hour < 20) & (when.weekday.to_numpy() < 5)).astype(float)
    distance = haversine_km(lat, lon, dlat, dlon)
    fare = r.base + r.per_km * distance + r.rush_surcharge * rush + 0.3 * (passengers > 4)
    fare = fare + rng.normal(0, r.noise, rows) * np.sqrt(1 + distance / 5)
    fare = np.round(np.maximum(fare, 2.5), 2)
    frame = pd.DataFrame({
        "key": [f"{t.strftime('%Y-%m-%d %H:%M:%S')}.{i}" for i, t in enumerate(when)],
        "fare_amount": fare,
        "pickup_datetime": when.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "pickup_longitude": lon.round(6), "pickup_latitude": lat.round(6),
        "dropoff_longitude": dlon.round(6), "dropoff_latitude": dlat.round(6),
        "passenger_count": passengers,
    })
    bad = rng.random(rows)
    frame.loc[bad < 0.007, ["pickup_longitude", "pickup_latitude"]] = 0.0
    frame.loc[(bad >= 0.007) & (bad < 0.012), "fare_amount"] *= -1
    return frame


def spec(uri: str, threshold: float = 1.6, margin: float = 0.1, fast: bool = False) -> dict:
    """A full taxi-fare spec (no models/ file needed); ``fast`` trains smaller candidates."""
    trees = 30 if fast else 120
    return {
        "task": TABULAR_REGRESSION,
        "description": "NYC taxi fare (Kaggle columns), MAE in dollars",
        "data": {
            "uri": uri, "feature_columns": FEATURES, "target_column": "fare_amount",
            "derived": {
                "haversine_km": ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"],
                "datetime": "pickup_datetime",
                "drop_zero": ["pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude"],
                "target_min": 0,
            },
        },
        "metric": {"name": "mae", "higher_is_better": False, "threshold": threshold, "margin": margin},
        "split": {"test_size": 0.2, "validation_size": 0.2, "seed": 42},
        "candidates": [
            {"estimator": {"type": "ridge", "params": {"alpha": 1.0}}},
            {"estimator": {"type": "random_forest", "params": {"n_estimators": trees, "max_depth": 12,
                                                               "min_samples_leaf": 3, "n_jobs": 1}}},
            {"estimator": {"type": "gradient_boosting", "params": {"n_estimators": trees, "max_depth": 3}}},
        ],
    }
