"""Production datasets: the labelled rows the predictors served, as training data.

``production:<model>?days=7`` (and/or ``&rows=N``) reads the predictors' served log (Postgres table
``served_log``, written by ``predictor.servedlog``; SERVED_LOG_DATABASE_URL) for the rows of ``<model>`` that
got a feedback label, served within the last ``days`` days and at most the ``rows`` newest. ``&reference=<uri>``
puts the rows of another dataset (the spec's reference data) before them. The rows become a table with the
spec's columns (the served inputs, the label as the label or target column) and are stored as a content-addressed
snapshot like an upload, with their lineage: the versions that served them, the window, the row counts.

A spec's ``retrain`` block (``mlops_common.spec.RetrainSpec``) turns into such a uri for the retrains the stack
starts by itself (:func:`uri_for`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import pandas as pd

from mlops_common.names import TEXT_CLASSIFICATION
from mlops_common.spec import ModelSpec

if TYPE_CHECKING:
    from trainer.datasets import DatasetStore, Snapshot

PREFIX = "production:"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class Window:
    model: str
    days: float | None
    rows: int | None
    reference: str | None


def _error(message: str) -> Exception:
    from trainer.datasets import DatasetError

    return DatasetError(message)


def parse(uri: str) -> Window:
    """The window a ``production:`` uri asks for; DatasetError saying what is wrong otherwise."""
    model, _, query = uri.strip()[len(PREFIX):].partition("?")
    if not NAME.match(model):
        raise _error(f"data.uri: {uri!r} does not name a model (production:<model>?days=7 or ?rows=5000)")
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"days", "rows", "reference"})
    if unknown:
        raise _error(f"data.uri: unknown parameter {unknown[0]!r} in {uri!r} (days, rows and reference are known)")
    try:
        days = float(params["days"][-1]) if "days" in params else None
        rows = int(params["rows"][-1]) if "rows" in params else None
    except ValueError as exc:
        raise _error(f"data.uri: {uri!r}: days must be a number and rows a whole number") from exc
    if days is None and rows is None:
        raise _error(f"data.uri: {uri!r} needs a window: ?days=N, ?rows=N or both")
    if (days is not None and not days > 0) or (rows is not None and rows < 1):
        raise _error(f"data.uri: {uri!r}: days and rows must be positive")
    reference = params["reference"][-1] if "reference" in params else None
    if reference is not None and (not reference.strip() or reference.strip().startswith(PREFIX)):
        raise _error(f"data.uri: {uri!r}: reference must be a dataset id, path or URL, not another production uri")
    return Window(model, days, rows, reference)


def uri_for(spec: ModelSpec) -> str:
    """The data.uri a stack-started retrain of ``spec`` trains on, from its ``retrain`` block."""
    r = spec.retrain
    if r.data == "reference":
        return spec.data.uri
    query: dict[str, Any] = {"days": f"{r.window_days:g}", "rows": r.max_rows}
    if r.data == "both":
        query["reference"] = spec.data.uri
    return f"{PREFIX}{spec.name}?{urlencode(query)}"


def fetch(database_url: str, window: Window) -> list[tuple[str, Any, Any, Any]]:
    """(version, served_at, inputs, label) of the window's labelled rows, oldest first."""
    import psycopg

    sql = ("SELECT model_version, served_at, inputs, label FROM served_log "
           "WHERE model_name = %s AND label IS NOT NULL")
    args: list[Any] = [window.model]
    if window.days is not None:
        sql += " AND served_at >= now() - make_interval(secs => %s)"
        args.append(window.days * 86400)
    sql += " ORDER BY id DESC"
    if window.rows is not None:
        sql += " LIMIT %s"
        args.append(window.rows)
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            records = conn.execute(sql, args).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise _error("data.uri: the served log is empty: no predictor has written to SERVED_LOG_DATABASE_URL "
                     "yet (the predictors need the same setting)") from exc
    except psycopg.Error as exc:
        raise _error(f"data.uri: could not read the served log: {type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return list(reversed(records))


def columns(spec: ModelSpec) -> list[str]:
    if spec.task == TEXT_CLASSIFICATION:
        return [str(spec.data.text_column), str(spec.data.label_column)]
    return [*(spec.data.feature_columns or []), str(spec.data.target_column)]


def frame(spec: ModelSpec, records: list[tuple[str, Any, Any, Any]]) -> pd.DataFrame:
    """The rows with the spec's columns: the served inputs, and the label as the label/target column."""
    if spec.task == TEXT_CLASSIFICATION:
        text, label = str(spec.data.text_column), str(spec.data.label_column)
        return pd.DataFrame({
            text: [r[2] if isinstance(r[2], str) else (r[2] or {}).get(text) for r in records],
            label: [str(r[3]) for r in records]})
    out = pd.DataFrame.from_records([r[2] if isinstance(r[2], dict) else {} for r in records],
                                    columns=list(spec.data.feature_columns or []))
    out[str(spec.data.target_column)] = [r[3] for r in records]
    return out


def materialise(store: DatasetStore, uri: str, spec: ModelSpec) -> Snapshot:
    window = parse(uri)
    records = fetch(store.served_log_url, window)
    wanted = " and ".join(w for w in (f"in the last {window.days:g} days" if window.days else "",
                                      f"the newest {window.rows} rows" if window.rows else "") if w)
    if not records:
        raise _error(f"data.uri: {uri}: no labelled rows served by {window.model!r} ({wanted}): send feedback "
                     "to the predictor (POST /feedback) and check that it writes the served log")
    rows = frame(spec, records)
    lineage: dict[str, Any] = {
        "kind": "production", "uri": uri, "model_name": window.model,
        "window": {"days": window.days, "rows": window.rows, "first_served_at": records[0][1].isoformat(),
                   "last_served_at": records[-1][1].isoformat()},
        "production_rows": len(rows), "versions": dict(Counter(str(r[0]) for r in records)),
    }
    if window.reference is not None:
        reference = store.snapshot(window.reference)
        ref = store.load(reference)
        missing = [c for c in columns(spec) if c not in ref.columns]
        if missing:
            raise _error(f"data.uri: the reference {window.reference!r} lacks column(s) {', '.join(missing)}")
        lineage["reference"] = {"uri": window.reference, "sha256": reference.sha256, "rows": len(ref)}
        rows = pd.concat([ref[columns(spec)], rows], ignore_index=True)
    lineage["rows"] = len(rows)
    data = rows.to_csv(index=False).encode()
    return store.ingest_stream(iter([data]), source=uri, name="production.csv", lineage=lineage)
