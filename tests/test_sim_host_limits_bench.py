"""bench/sim_host_limits.py on the committed SmolLM2 runs: the constants it fits from stretch A
are the ones the built-in vLLM profile ships, and they predict stretch B's machine better than
a sim without them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.sim_host_limits import EXTRACTION, STUDY, _profile, fit, measured_runs, score
from engines import HardwareSpec, ModelSpec, RunContext
from engines.sim.profiles import load_profile


@pytest.mark.slow
def test_the_shipped_host_constants_are_what_the_committed_runs_fit():
    runs = measured_runs(STUDY)
    assert set(runs) == {"A", "B"} and len(runs["B"]["expert"]) == 5  # 4 rounds, the end
    ctx = RunContext(
        model=ModelSpec.model_validate("SmolLM2-135M"),
        hardware=HardwareSpec(gpu="H200"),
        workload=EXTRACTION,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit(runs["A"], ctx, Path(tmp))
        shipped = load_profile("vllm")
        assert shipped.api_per_token_s == pytest.approx(fitted["api_per_token_s"], rel=0.03)
        assert shipped.host_per_seq_s == pytest.approx(fitted["host_per_seq_s"], rel=0.03)
        held_out = score(runs["B"], ctx, _profile(fitted, Path(tmp)))
        zero = _profile({"host_per_seq_s": 0.0, "api_per_token_s": 0.0}, Path(tmp))
        without = score(runs["B"], ctx, zero)
    for knob in ("expert", "api_server_count_4"):
        ape = "output_tokens_per_s_median_ape_pct"
        assert held_out["by_knob"][knob][ape] < 25 < without["by_knob"][knob][ape]
    assert held_out["api4_over_expert"]["predicted"] > 1.5
    assert without["api4_over_expert"]["predicted"] == pytest.approx(1.0, abs=0.01)
