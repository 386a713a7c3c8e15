"""Console tables never print float artefacts such as 'nan%'."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

from rich.console import Console

from tuner.console import print_calibration


def test_a_calibration_error_with_no_data_reads_n_a_not_nan_percent():
    cal = SimpleNamespace(
        name="p", engine="vllm", gpu="H200", train=[1, 2], test=[],
        fitted={"decode_efficiency": 0.8}, shipped={"decode_efficiency": 0.7},
        fit_errors={"train": {"output_tokens_per_s": 3.25}, "test": {"output_tokens_per_s": math.nan}},
        not_identified=[],
    )  # fmt: skip
    out = io.StringIO()
    print_calibration(cal, Console(file=out, width=200))
    text = out.getvalue()
    assert "nan" not in text.lower()
    assert "3.2%" in text and "n/a" in text
