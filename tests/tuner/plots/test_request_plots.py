from pathlib import Path

import pytest

from engines.metrics import RequestRecord
from engines.serving.request_log import read_request_log
from tuner.plots import plot_request_timeline
from tuner.plots.requests import FAILED_COLOR

H200_TRACE = Path(__file__).parents[3] / "studies/real/h200/requests/trial-0-run-0.jsonl.gz"


def req(start, first, end, error=None, out=16):
    return RequestRecord(
        start_s=start,
        first_token_s=first,
        end_s=end,
        input_tokens=32,
        output_tokens=0 if first is None else out,
        error=error,
    )


def trace(fig, prefix):
    (found,) = [t for t in fig.data if t.name.startswith(prefix) and t.mode == "lines"]
    return found


def spans(t):
    """{row: (from, to)} of a segment trace, checking its None separators."""
    x, y = list(t.x), list(t.y)
    assert len(x) % 3 == 0 and x[2::3] == [None] * (len(x) // 3) and y[2::3] == x[2::3]
    out = {}
    for i in range(0, len(x), 3):
        assert y[i] == y[i + 1], "a segment stays on its request's row"
        assert y[i] not in out, "one segment per request and kind"
        out[y[i]] = (x[i], x[i + 1])
    return out


@pytest.fixture
def records():
    # deliberately out of start order: rows follow start time, not the log's order
    return [
        req(2.0, 2.5, 4.0),  # row 2
        req(0.0, 1.0, 3.0),  # row 0
        req(1.0, None, 1.5, error="http_500"),  # row 1, failed before its first token
        req(3.0, 3.25, 3.5, error="stream_cut"),  # row 3, failed while decoding
        req(4.0, None, 4.1),  # row 4, succeeded without output
    ]


def test_wait_and_decode_segments_sit_on_each_request_row_sorted_by_start(records):
    fig = plot_request_timeline(records)
    assert spans(trace(fig, "waiting")) == {0: (0.0, 1.0), 2: (2.0, 2.5), 4: (4.0, 4.1)}
    assert spans(trace(fig, "decoding")) == {0: (1.0, 3.0), 2: (2.5, 4.0)}


def test_failed_requests_are_drawn_only_as_failed_from_start_to_end(records):
    fig = plot_request_timeline(records)
    failed = trace(fig, "failed")
    assert failed.name == "failed (2)"
    assert failed.line.color == FAILED_COLOR
    assert spans(failed) == {1: (1.0, 1.5), 3: (3.0, 3.5)}
    for kind in ("waiting", "decoding"):
        assert not {1, 3} & set(spans(trace(fig, kind))), f"a failed request drawn as {kind}"
    (ends,) = [t for t in fig.data if t.mode == "markers"]
    assert list(ends.x) == [1.5, 3.5] and list(ends.y) == [1, 3]
    assert "http_500" in ends.hovertext[0] and "stream_cut" in ends.hovertext[1]


def test_rows_read_top_down_and_the_title_summarises_the_trace(records):
    fig = plot_request_timeline(records, title="trial 0")
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.title.text.startswith("trial 0")
    # TTFTs of the successful requests with a first token: 1000 ms and 500 ms
    assert "5 requests, 2 failed, TTFT p50 750 ms, max 1,000 ms" in fig.layout.title.text
    assert "TTFT 1,000 ms" in trace(fig, "waiting").hovertext[0]


def test_traces_are_webgl_so_long_runs_stay_fast(records):
    assert {t.type for t in plot_request_timeline(records).data} == {"scattergl"}


def test_empty_trace_is_a_message_not_an_error():
    fig = plot_request_timeline([], title="nothing")
    assert not fig.data
    assert fig.layout.title.text == "nothing"
    assert "no requests" in fig.layout.annotations[0].text


def test_the_committed_h200_trace_shows_its_first_wave():
    records = read_request_log(H200_TRACE)
    fig = plot_request_timeline(records)
    wait = spans(trace(fig, "waiting"))
    assert len(records) == 800 and len(wait) == 800 and len(spans(trace(fig, "decoding"))) == 800
    # the first 256 clients all start at once and queue behind each other's prefills
    first_wave = [wait[k] for k in range(256)]
    assert max(start for start, _ in first_wave) < 0.1
    assert max(first - start for start, first in first_wave) > 5.0
