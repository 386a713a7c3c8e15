"""Figures of one real run's per-request trace: when each request waited and when it decoded.

Aggregates say how a config did; the trace (:mod:`engines.serving.request_log`) says why. On the
H200, five clean runs of the vLLM defaults agreed on throughput within 2.5% but their median TTFT
ranged from 1.0 to 3.0 s: a closed loop of 256 clients falls into waves (a burst of prefills,
then decodes that end close together, then the next burst), and a median taken over waves of
different shapes moves with them. A timeline makes the waves visible at a glance.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import plotly.graph_objects as go

from engines.metrics import RequestRecord
from tuner.plots._style import (
    FRONT_COLOR,
    LEGEND_BELOW,
    MARGIN_WITH_LEGEND,
    WINNER_COLOR,
    empty_figure,
)

WAIT_COLOR = "rgba(140,140,140,0.7)"
DECODE_COLOR = FRONT_COLOR
FAILED_COLOR = WINNER_COLOR

# (row, from_s, to_s, hover text) of one horizontal segment
_Span = tuple[int, float, float, str]


def plot_request_timeline(
    records: Sequence[RequestRecord], title: str = "Requests over time"
) -> go.Figure:
    """One row per request, sorted by start time: a thin grey segment while it waits for its
    first token, a coloured one while it decodes, failed requests red from start to end.

    Read it for the load's shape, not a number: in a closed loop, rows that start together
    (vertical edges of the grey area) are a wave whose prefills queue behind each other, which
    is what makes one run's median TTFT unstable. A request that succeeded without a first token
    (no output) is grey to its end. Each kind is a single WebGL trace with gaps between
    segments, so a trace of thousands of requests stays responsive.
    """
    if not records:
        fig = empty_figure("no requests in this trace")
        fig.update_layout(title=title, template="plotly_white")
        return fig
    rows = sorted(records, key=lambda r: r.start_s)  # stable: ties keep the log's order
    wait: list[_Span] = []
    decode: list[_Span] = []
    failed: list[_Span] = []
    for k, r in enumerate(rows):
        text = _hover(k, r)
        if r.error is not None:
            failed.append((k, r.start_s, r.end_s, text))
        elif r.first_token_s is None:
            wait.append((k, r.start_s, r.end_s, text))
        else:
            wait.append((k, r.start_s, r.first_token_s, text))
            decode.append((k, r.first_token_s, r.end_s, text))
    fig = go.Figure()
    fig.add_trace(_segments(wait, "waiting (start → first token)", WAIT_COLOR, 1))
    fig.add_trace(_segments(decode, "decoding (first token → end)", DECODE_COLOR, 2))
    fig.add_trace(_segments(failed, f"failed ({len(failed)})", FAILED_COLOR, 2))
    fig.add_trace(
        go.Scattergl(
            x=[end for _, _, end, _ in failed],
            y=[k for k, _, _, _ in failed],
            mode="markers",
            name="failed: end",
            legendgroup="failed",
            showlegend=False,
            marker={"color": FAILED_COLOR, "symbol": "x", "size": 7},
            hovertext=[text for *_, text in failed],
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{title}<br><sup>{_summary(rows, len(failed))}</sup>",
        xaxis_title="seconds from the run's start",
        yaxis_title="request (by start time)",
        yaxis={"autorange": "reversed"},
        template="plotly_white",
        legend=LEGEND_BELOW,
        margin=MARGIN_WITH_LEGEND,
        height=520,
    )
    return fig


def _segments(spans: Sequence[_Span], name: str, color: str, width: float) -> go.Scattergl:
    """All ``spans`` as one line trace, ``None`` between segments so they stay apart."""
    x: list[float | None] = []
    y: list[int | None] = []
    text: list[str | None] = []
    for row, start, end, hover in spans:
        x += [start, end, None]
        y += [row, row, None]
        text += [hover, hover, None]
    return go.Scattergl(
        x=x,
        y=y,
        mode="lines",
        name=name,
        legendgroup=name.split(" ")[0],
        line={"color": color, "width": width},
        hovertext=text,
        hovertemplate="%{hovertext}<extra></extra>",
    )


def _hover(row: int, r: RequestRecord) -> str:
    head = f"<b>request {row}</b> · {r.input_tokens} in / {r.output_tokens} out"
    lines = [head, f"start {r.start_s:.2f} s, end {r.end_s:.2f} s"]
    if r.first_token_s is not None:
        lines.append(f"TTFT {1000 * (r.first_token_s - r.start_s):,.0f} ms")
    if r.error is not None:
        lines.append(f"failed: {r.error}")
    return "<br>".join(lines)


def _summary(rows: Sequence[RequestRecord], failed: int) -> str:
    ttfts = [
        r.first_token_s - r.start_s for r in rows if r.error is None and r.first_token_s is not None
    ]
    parts = [f"{len(rows)} requests", f"{failed} failed"]
    if ttfts:
        parts.append(f"TTFT p50 {1000 * statistics.median(ttfts):,.0f} ms")
        parts.append(f"max {1000 * max(ttfts):,.0f} ms")
    return ", ".join(parts)
