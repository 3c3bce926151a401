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


_SAVERS = (
    ("memory", "InMemorySaver", "#7f7f7f"),
    ("hybrid", "HybridSaver", "#1f77b4"),
    ("postgres", "PostgresSaver", "#d62728"),
)


def long_figure(results: dict[str, Any]) -> go.Figure | None:
    """One thread grown to 1,000 turns: memory, PostgreSQL bytes and turn time per saver, against turns."""
    from plotly.subplots import make_subplots

    lengths = (results.get("long") or {}).get("lengths") or {}
    if not lengths:
        return None
    turns = sorted(int(n) for n in lengths)
    rows = [lengths[str(n)] for n in turns]
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("memory (MB, log)", "PostgreSQL bytes (MB, log)", "graph turn (ms, median)")
    )
    series = {
        "memory": [r["memory_payload_bytes"] / 1e6 for r in rows],
        "hybrid": [r["hybrid_resident_bytes"] / 1e6 for r in rows],
    }
    store = {
        "hybrid": [r["hybrid_store_bytes"] / 1e6 for r in rows],
        "postgres": [r["postgres_store_bytes"] / 1e6 for r in rows],
    }
    for key, name, color in _SAVERS:
        for col, values in ((1, series.get(key)), (2, store.get(key)), (3, [r["turn_ms"][key] for r in rows])):
            if values is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=turns,
                    y=values,
                    name=name,
                    legendgroup=key,
                    showlegend=col == 3,
                    mode="lines+markers",
                    line={"color": color, "width": 2.5},
                ),  # fmt: skip
                row=1,
                col=col,
            )
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="turns in the thread")
    meta = results["meta"]
    fig.update_layout(
        title={
            "text": "One conversation grown to 1,000 turns, per saver"
            f"<br><sup>{meta['mode']} run, {meta['machine']}, real chat graph (offline responder)</sup>",
            "x": 0.02,
        },
        legend={"orientation": "h", "x": 0.0, "y": -0.2, "xanchor": "left", "yanchor": "top"},
        template="plotly_white",
        width=WIDTH + 300,
        height=520,
        margin={"l": 60, "r": 30, "t": 90, "b": 110},
    )
    return fig


def write(results: dict[str, Any], html: Path, png: Path) -> str | None:
    """Write the charts as HTML and PNG (the long-conversation one beside, ``*_long``); return why a PNG
    could not be made, or None."""
    long = long_figure(results)
    if long is not None:
        long_html = html.with_name(html.stem.replace("growth", "long") + html.suffix)
        long.write_html(long_html, include_plotlyjs="cdn", full_html=True)
        try:
            _png(long, png.with_name(png.stem.replace("growth", "long") + png.suffix), width=WIDTH + 300, height=520)
        except Exception as exc:  # noqa: BLE001 - the PNG is a convenience
            logger.warning("could not render the long-conversation chart: %s", exc)
    fig = figure(results)
    html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(html, include_plotlyjs="cdn", full_html=True)
    try:
        _png(fig, png)
    except Exception as exc:  # noqa: BLE001 - the PNG is a convenience; the HTML and results stand
        logger.warning("could not render %s: %s", png, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def _png(fig: go.Figure, png: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
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
                page = browser.new_page(viewport={"width": width + 40, "height": height + 40}, device_scale_factor=2)
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg", timeout=30_000)
                page.locator(".plotly-graph-div").first.screenshot(path=str(png))
            finally:
                browser.close()


__all__ = ["figure", "long_figure", "write"]
