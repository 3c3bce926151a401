"""Plotly figures of the Backups and Threads pages, built from the DataFrames of persistence.views."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_LAYOUT = {
    "height": 300,
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0.0},
    "template": "plotly_white",
    "title_font_size": 15,
    "xaxis": {"tickformat": "%H:%M:%S", "nticks": 5, "tickangle": 0},
}
_OK = "#3b6ea5"
_MEMORY = "#e07b39"
_FAIL = "#c0392b"


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, **{**_LAYOUT, "xaxis": {"visible": False}, "yaxis": {"visible": False}})
    return fig


def lag_chart(runs: pd.DataFrame, samples: pd.DataFrame) -> go.Figure:
    """Backup lag: the age of the oldest change not yet in PostgreSQL, live and at each run."""
    title = "Backup lag: what a crash would lose"
    if runs.empty and samples.empty:
        return _empty(title, "No data yet")
    fig = go.Figure()
    if not samples.empty:
        fig.add_trace(
            go.Scatter(x=samples["at"], y=samples["lag_s"], name="live", mode="lines", line={"color": _MEMORY})
        )
    if not runs.empty:
        ok = runs[runs["ok"]]
        failed = runs[~runs["ok"]]
        fig.add_trace(
            go.Scatter(
                x=ok["started_at"], y=ok["lag_s"], name="at backup", mode="markers", marker={"color": _OK, "size": 8}
            )
        )
        if not failed.empty:
            fig.add_trace(
                go.Scatter(
                    x=failed["started_at"],
                    y=failed["lag_s"],
                    name="failed run",
                    mode="markers",
                    marker={"color": _FAIL, "size": 10, "symbol": "x"},
                    text=failed["error"],
                )
            )
    fig.update_layout(title=title, yaxis_title="seconds", yaxis_rangemode="tozero", **_LAYOUT)
    return fig


def counts_chart(runs: pd.DataFrame, samples: pd.DataFrame) -> go.Figure:
    """Checkpoints in memory (sampled) and in the backed-up generation (at each run)."""
    title = "Checkpoints in memory and backed up"
    backed = runs.dropna(subset=["checkpoints"]) if not runs.empty else runs
    if samples.empty and backed.empty:
        return _empty(title, "No data yet")
    fig = go.Figure()
    if not samples.empty:
        fig.add_trace(
            go.Scatter(
                x=samples["at"], y=samples["checkpoints"], name="in memory", mode="lines", line={"color": _MEMORY}
            )
        )
    if not backed.empty:
        backed = backed.sort_values("finished_at")
        fig.add_trace(
            go.Scatter(
                x=backed["finished_at"],
                y=backed["checkpoints"].astype(float),
                name="backed up",
                mode="lines+markers",
                line={"color": _OK, "shape": "hv"},
            )
        )
    fig.update_layout(title=title, yaxis_title="checkpoints", yaxis_rangemode="tozero", **_LAYOUT)
    return fig


def runs_chart(runs: pd.DataFrame) -> go.Figure:
    """Each run's duration (bars) and rows written (line)."""
    title = "Each run (oldest first): duration, rows"
    if runs.empty:
        return _empty(title, "No backup run yet")
    runs = runs.sort_values("started_at")
    # one category per run (a time axis would squeeze runs a few ms apart into one bar)
    labels = [f"#{i + 1}" for i in range(len(runs))]
    hover = [
        f"{t:%H:%M:%S} {trig}" + (f"<br>{err[:120]}" if err else "")
        for t, trig, err in zip(runs["started_at"], runs["trigger"], runs["error"], strict=True)
    ]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = [_OK if ok else _FAIL for ok in runs["ok"]]
    fig.add_trace(
        go.Bar(x=labels, y=runs["duration_s"] * 1000, name="duration (ms)", marker_color=colors, hovertext=hover),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=labels, y=runs["rows"], name="rows", mode="lines+markers", line={"color": _MEMORY}),
        secondary_y=True,
    )
    fig.update_layout(title=title, **_LAYOUT)
    fig.update_xaxes(type="category", tickformat="", nticks=8)
    fig.update_yaxes(title_text="ms", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="rows", rangemode="tozero", showgrid=False, secondary_y=True)
    return fig


def timeline_chart(history: pd.DataFrame) -> go.Figure:
    """A thread's checkpoints over time, by step, coloured by source."""
    title = "Checkpoint timeline"
    if history.empty:
        return _empty(title, "No checkpoints")
    fig = go.Figure()
    for source, part in history.groupby(history["source"].fillna("?"), sort=True):
        fig.add_trace(
            go.Scatter(
                x=part["ts"],
                y=part["step"],
                mode="markers",
                name=str(source),
                marker={"size": 10},
                text=part["checkpoint_id"],
                hovertemplate="%{text}<br>step %{y}<br>%{x}<extra>%{fullData.name}</extra>",
            )
        )
    ordered = history.sort_values("ts")
    fig.add_trace(
        go.Scatter(
            x=ordered["ts"],
            y=ordered["step"],
            mode="lines",
            line={"color": "#bbbbbb", "width": 1},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_layout(title=title, yaxis_title="step", **_LAYOUT)
    return fig


__all__ = ["counts_chart", "lag_chart", "runs_chart", "timeline_chart"]
