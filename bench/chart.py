"""The growth chart: backup and restore time against the number of checkpoints (plotly).

The HTML loads plotly.js from its CDN (a few KB in the repository); the PNG is rendered by
Playwright driving the system Chromium on a copy of the HTML with plotly.js inlined, so no
browser download and no extra package (kaleido) are needed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1000, 700

_SERIES = (
    ("backup_s", "HybridSaver first backup", "#1f77b4", "solid"),
    ("raw_copy_s", "raw COPY of the same rows (bare tables)", "#1f77b4", "dot"),
    ("raw_copy_indexed_s", "raw COPY into tables with the saver's indexes", "#17becf", "dashdot"),
    ("postgres_s", "PostgresSaver put of the same checkpoints", "#7f7f7f", "dash"),
    ("restore_s", "HybridSaver restore", "#d62728", "solid"),
    ("warm_start_s", "HybridSaver warm start (load newest generation)", "#ff7f0e", "solid"),
    ("raw_copy_to_s", "raw COPY TO of the same rows", "#d62728", "dot"),
)


def figure(results: dict[str, Any]) -> go.Figure:
    sizes = sorted(results["backup"]["sizes"], key=lambda s: s["checkpoints"])
    fig = go.Figure()
    for key, name, color, dash in _SERIES:
        points = [(s["checkpoints"], s[key]) for s in sizes if s.get(key)]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                name=name,
                mode="lines+markers",
                line={"color": color, "dash": dash, "width": 2.5 if dash == "solid" else 1.8},
                hovertemplate="%{x:,} checkpoints: %{y:.3f} s<extra>" + name + "</extra>",
            )
        )
    inc = results["backup"].get("incremental") or {}
    if inc:
        fig.add_trace(
            go.Scatter(
                x=[inc["threads"] * 30],
                y=[inc["incremental_s"]],
                name=f"HybridSaver backup after {inc['changed_threads']:,} threads (1%) changed",
                mode="markers",
                marker={"symbol": "diamond", "size": 11, "color": "#2ca02c"},
                hovertemplate="1% changed: %{y:.3f} s<extra></extra>",
            )
        )
    meta = results["meta"]
    fig.update_layout(
        title={
            "text": "How backup and restore time grow with the number of checkpoints"
            f"<br><sup>{meta['mode']} run, {meta['machine']}, {meta.get('database_short', '')}</sup>",
            "x": 0.02,
        },
        xaxis={"title": "checkpoints (threads x 30, 20 messages each)", "type": "log"},
        yaxis={"title": "seconds (log)", "type": "log"},
        legend={"orientation": "h", "x": 0.0, "y": -0.16, "xanchor": "left", "yanchor": "top"},
        template="plotly_white",
        width=WIDTH,
        height=HEIGHT,
        margin={"l": 70, "r": 30, "t": 80, "b": 150},
    )
    return fig


def write(results: dict[str, Any], html: Path, png: Path) -> str | None:
    """Write the chart as HTML and PNG; return why the PNG could not be made, or None."""
    fig = figure(results)
    html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(html, include_plotlyjs="cdn", full_html=True)
    try:
        _png(fig, png)
    except Exception as exc:  # noqa: BLE001 - the PNG is a convenience; the HTML and results stand
        logger.warning("could not render %s: %s", png, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def _png(fig: go.Figure, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium' (make browser)")
    with tempfile.TemporaryDirectory(prefix="bench-chart-") as tmp:
        page_file = Path(tmp) / "chart.html"
        fig.write_html(page_file, include_plotlyjs=True, full_html=True, config={"staticPlot": True})
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                page = browser.new_page(viewport={"width": WIDTH + 40, "height": HEIGHT + 40}, device_scale_factor=2)
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg", timeout=30_000)
                page.locator(".plotly-graph-div").first.screenshot(path=str(png))
            finally:
                browser.close()


__all__ = ["figure", "write"]
