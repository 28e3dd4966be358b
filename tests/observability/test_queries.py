"""Every dashboard panel's query and every alert's query, run against a real Prometheus scraping the running
stack, returns series: a query that returns nothing is a failing test (wrong metric, label or join)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.observability import provisioning as prov
from tests.observability.stack import Stack
from tests.support.scripts import load_script

pytestmark = pytest.mark.slow

QUERIES = prov.panel_queries() + prov.alert_queries()
METRIC = re.compile(r"\b([a-z_][a-z0-9_]*)(?=\{|\[| offset|\)|\s*$|\s*[-+*/<>=]| or | and | unless )")
FUNCTIONS = {"sum", "max", "min", "rate", "increase", "histogram_quantile", "group", "by", "on", "or", "and",
             "unless", "offset", "group_left", "le", "instance", "model_name", "model_version", "feature", "job",
             "handler", "status", "label", "candidate", "outcome", "decision", "vector", "topk"}


def metric_names(expr: str) -> set[str]:
    """Metric names a query reads (series selectors), without the base suffixes of histograms."""
    names = {m for m in METRIC.findall(re.sub(r"\{[^}]*\}", "{}", expr)) if m not in FUNCTIONS}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_every_metric_a_query_reads_is_exported(stack: Stack) -> None:
    deadline = time.monotonic() + 20  # the stack's last requests may land after the scrape that marked it up
    while True:
        exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n in stack.prometheus.metric_names()}
        missing = {}
        for query in QUERIES:
            absent = metric_names(query.expr) - exported
            if absent:
                missing[query.source] = sorted(absent)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"queries read metrics no service exports: {missing}"


@pytest.mark.parametrize("query", QUERIES, ids=[q.source for q in QUERIES])
def test_query_returns_series(stack: Stack, query: prov.Query) -> None:
    expr = prov.concrete(query.expr)
    result = stack.prometheus.wait_for(expr, lambda r: len(r) > 0, timeout=20, what="series")
    assert result, expr


@pytest.mark.skipif(not os.environ.get("OBS_RENDER_DIR"), reason="set OBS_RENDER_DIR=<dir> to render the dashboards")
def test_render_dashboards(stack: Stack) -> None:
    """Opt-in: PNGs of the four dashboards over this run's history (docs/img/dashboards was made this way)."""
    render = load_script("infra/grafana/render.py", "grafana_render")
    paths = render.render_all(stack.prometheus.url, Path(os.environ["OBS_RENDER_DIR"]), minutes=10,
                              rate_interval="20s")
    assert len(paths) == 4 and all(p.stat().st_size > 10_000 for p in paths)
