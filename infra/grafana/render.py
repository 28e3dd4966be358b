"""Render the provisioned dashboards to PNG from a live Prometheus, where Grafana itself cannot run.

    python infra/grafana/render.py --prometheus http://127.0.0.1:9090 --out docs/img/dashboards --minutes 15

Each panel is drawn at its gridPos with the same queries Grafana would send: time series as lines,
stat and bar-gauge panels as their latest values. An approximation of Grafana's look, not a replacement.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DASHBOARDS_DIR = Path(__file__).resolve().parent / "provisioning" / "dashboards"
UNIT_FORMAT = {"percentunit": lambda v: f"{v * 100:.1f}%", "s": lambda v: f"{v:.3g} s",
               "reqps": lambda v: f"{v:.3g}/s"}


def concrete(expr: str, model_name: str, rate_interval: str) -> str:
    return (expr.replace("$model_name", model_name).replace("$__rate_interval", rate_interval)
            .replace("$__interval", "15s").replace("$__range", "1h"))


def legend(fmt: str, metric: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "")
    return text.strip() or json.dumps(metric)


def fmt_value(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "NaN"
    return UNIT_FORMAT.get(unit, lambda v: f"{v:.4g}")(value)


class Client:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=30)

    def instant(self, expr: str) -> list[dict[str, Any]]:
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        return body["data"]["result"] if body.get("status") == "success" else []

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        body = self.http.get("/api/v1/query_range",
                             params={"query": expr, "start": start, "end": end, "step": step}).json()
        return body["data"]["result"] if body.get("status") == "success" else []


def draw_panel(ax: Any, panel: dict[str, Any], client: Client, window: tuple[float, float, float],
               model_name: str, rate_interval: str) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    ax.set_title(panel["title"], fontsize=9, loc="left")
    start, end, step = window
    if panel["type"] == "timeseries":
        drawn = 0
        for target in panel["targets"]:
            for series in client.range(concrete(target["expr"], model_name, rate_interval), start, end, step):
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(target.get("legendFormat", ""), series["metric"])[:40])
                drawn += 1
        ax.set_xlabel("minutes", fontsize=7)
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    rows = []
    for target in panel["targets"]:
        for series in client.instant(concrete(target["expr"], model_name, rate_interval)):
            rows.append((legend(target.get("legendFormat", ""), series["metric"])[:40], float(series["value"][1])))
    ax.set_xticks([])
    ax.set_yticks([])
    if not rows:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    if panel["type"] == "bargauge":
        rows = rows[:10]
        top = max(abs(v) for _, v in rows if v == v) or 1.0
        for i, (name, value) in enumerate(rows):
            y = 1 - (i + 0.5) / len(rows)
            width = 0.55 * (value / top if value == value else 0)
            ax.add_patch(plt.Rectangle((0.3, y - 0.35 / len(rows)), width, 0.7 / len(rows), color="#3274d9",
                                       transform=ax.transAxes))
            ax.text(0.02, y, name[:30], fontsize=7, va="center", transform=ax.transAxes)
            ax.text(0.31 + width, y, " " + fmt_value(value, unit), fontsize=7, va="center", transform=ax.transAxes)
        return
    for i, (name, value) in enumerate(rows[:6]):
        y = 1 - (i + 0.5) / min(len(rows), 6)
        ax.text(0.03, y, name, fontsize=7, va="center", transform=ax.transAxes)
        ax.text(0.97, y, fmt_value(value, unit), fontsize=12, va="center", ha="right", weight="bold",
                transform=ax.transAxes)


def render(dashboard: dict[str, Any], client: Client, out: Path, minutes: float, model_name: str = ".*",
           rate_interval: str = "1m") -> Path:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + 1  # one row for the title
    unit = 0.5
    fig = plt.figure(figsize=(24 * unit, rows * unit))
    end = time.time()
    window = (end - minutes * 60, end, max(1.0, minutes * 60 / 200))
    for panel in panels:
        g = panel["gridPos"]
        pad = 0.035 if panel["type"] == "timeseries" else 0.006  # room for tick labels
        ax = fig.add_axes([g["x"] / 24 + pad, 1 - (g["y"] + 1 + g["h"]) / rows + 1.2 / rows,
                           g["w"] / 24 - pad - 0.006, g["h"] / rows - 1.9 / rows])
        draw_panel(ax, panel, client, window, model_name, rate_interval)
    fig.suptitle(dashboard["title"], x=0.01, y=1 - 0.3 / rows, ha="left", va="top", fontsize=13, weight="bold")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dashboard['uid']}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_all(prometheus_url: str, out: Path, minutes: float = 15, rate_interval: str = "1m") -> list[Path]:
    client = Client(prometheus_url)
    return [render(json.loads(p.read_text()), client, out, minutes, rate_interval=rate_interval)
            for p in sorted(DASHBOARDS_DIR.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate-interval", default="1m")
    args = parser.parse_args()
    for path in render_all(args.prometheus, args.out, args.minutes, args.rate_interval):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
