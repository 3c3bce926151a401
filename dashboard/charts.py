"""Plotly figures of the Backups and Threads pages, built from the DataFrames of dashboard.views."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_LAYOUT = {
    "height": 300,
    # the toolbar sits on the right, vertical, below the title; the same uirevision on every refresh
    # keeps a zoom or a hidden trace while the figures update
    "margin": {"l": 10, "r": 40, "t": 40, "b": 10},
    "modebar": {"orientation": "v"},
    "uirevision": "keep",
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
        for member, part in ok.groupby(ok["member"].fillna(-1), sort=True):
            name = "at backup" if member == -1 else f"member {int(member)}"
            fig.add_trace(
                go.Scatter(x=part["started_at"], y=part["lag_s"], name=name, mode="markers", marker={"size": 8})
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
    fig.update_yaxes(tickformat=",d")
    return fig


def runs_chart(runs: pd.DataFrame) -> go.Figure:
    """Each run's duration (bars) and rows written (line)."""
    title = "Each run (oldest first): duration, rows"
    if runs.empty:
        return _empty(title, "No backup run yet")
    runs = runs.sort_values("started_at")
    # one category per run (a time axis would squeeze runs a few ms apart into one bar)
    labels = [f"#{i + 1}" for i in range(len(runs))]  # category axis: nticks keeps the labels apart
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
    fig.update_xaxes(type="category", tickformat="", nticks=6)
    fig.update_yaxes(title_text="ms", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="rows", rangemode="tozero", showgrid=False, tickformat=",d", secondary_y=True)
    return fig


def memory_chart(samples: pd.DataFrame) -> go.Figure:
    """Bytes of resident threads in this process against the memory budget."""
    title = "Memory: resident threads against the budget"
    if samples.empty:
        return _empty(title, "No data yet")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=samples["at"], y=samples["resident_bytes"], name="resident", mode="lines", line={"color": _MEMORY})
    )
    budget = samples["budget"].dropna()
    if not budget.empty:
        fig.add_trace(
            go.Scatter(
                x=samples["at"],
                y=samples["budget"],
                name="budget",
                mode="lines",
                line={"color": _FAIL, "dash": "dash"},
            )
        )
    fig.update_layout(title=title, yaxis_title="bytes", yaxis_rangemode="tozero", **_LAYOUT)
    fig.update_yaxes(tickformat=".3s")
    return fig


def timeline_chart(history: pd.DataFrame) -> go.Figure:
    """A thread by turn: each user input starts a turn; bars count the checkpoints of each turn
    and show when it happened."""
    title = "Timeline by turn"
    if history.empty:
        return _empty(title, "No checkpoints")
    ordered = history.sort_values("ts")
    turn = (ordered["source"] == "input").cumsum().clip(lower=1)
    turns = (
        ordered.assign(turn=turn)
        .groupby("turn")
        .agg(checkpoints=("checkpoint_id", "count"), started=("ts", "min"), bytes=("bytes", "sum"))
        .reset_index()
    )
    fig = go.Figure(
        go.Bar(
            x=turns["turn"],
            y=turns["checkpoints"],
            marker_color=_OK,
            customdata=list(zip(turns["started"].dt.strftime("%Y-%m-%d %H:%M:%S"), turns["bytes"], strict=True)),
            hovertemplate="turn %{x}<br>%{y} checkpoints<br>%{customdata[0]} UTC<br>%{customdata[1]:,} bytes"
            "<extra></extra>",
            name="checkpoints",
        )
    )
    fig.update_layout(title=title, yaxis_title="checkpoints", **{**_LAYOUT, "xaxis": {"title": "turn"}})
    fig.update_xaxes(tickformat=",d", dtick=1 if len(turns) <= 20 else None)
    fig.update_yaxes(tickformat=",d")
    return fig


__all__ = ["counts_chart", "lag_chart", "memory_chart", "runs_chart", "timeline_chart"]
