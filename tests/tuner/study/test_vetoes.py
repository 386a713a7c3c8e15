"""The learned failure model: it vetoes a region that keeps failing, vetoes cost no budget, and
the veto can never loop."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from engines import EngineError
from engines.base import Param
from tuner.spec import parse_spec
from tuner.study.loop import build_engines, counted_trials, fail_reason, run_study
from tuner.study.vetoes import (
    MAX_VETOES_IN_A_ROW,
    THRESHOLD,
    VETO_REASON,
    FailureModel,
    veto_reason,
)

SPACE = {
    "vllm": [
        Param("max_num_seqs", "categorical", (16, 32, 64, 128, 256, 512)),
        Param("gpu_memory_utilization", "categorical", (0.85, 0.9, 0.95)),
        Param("enforce_eager", "categorical", (False, True)),
    ]
}


def _fails(config):
    return config["max_num_seqs"] >= 256 and config["gpu_memory_utilization"] >= 0.9


def _history():
    out = []
    for seqs in (16, 64, 128, 256, 512):
        for share in (0.85, 0.95):
            config = {"max_num_seqs": seqs, "gpu_memory_utilization": share, "enforce_eager": False}
            out.append(("vllm", config, _fails(config)))
    return out


def test_model_predicts_the_failing_region_and_not_the_safe_one():
    model = FailureModel(SPACE).fit(_history())
    for seqs in (256, 512):
        bad = {"max_num_seqs": seqs, "gpu_memory_utilization": 0.95, "enforce_eager": False}
        assert model.probability("vllm", bad) > THRESHOLD
    for seqs in (16, 32, 64):
        safe = {"max_num_seqs": seqs, "gpu_memory_utilization": 0.9, "enforce_eager": True}
        assert model.probability("vllm", safe) < THRESHOLD / 2


def test_no_failure_seen_means_no_veto():
    model = FailureModel(SPACE).fit([(e, c, False) for e, c, _ in _history()])
    assert (
        model.probability(
            "vllm", {"max_num_seqs": 512, "gpu_memory_utilization": 0.95, "enforce_eager": False}
        )
        == 0.0
    )


def _study_with(history, vetoes=0):
    study = optuna.create_study()
    for engine, config, failed in history:
        t = study.ask()
        t.set_user_attr("engine", engine)
        t.set_user_attr("config", config)
        if failed:
            t.set_user_attr("fail", {"reason": "oom", "detail": ""})
            study.tell(t, state=TrialState.FAIL)
        else:
            study.tell(t, 1.0)
    for _ in range(vetoes):
        t = study.ask()
        t.set_user_attr("fail", {"reason": VETO_REASON, "detail": ""})
        study.tell(t, state=TrialState.PRUNED)
    return study


def test_veto_is_capped_so_the_search_cannot_loop():
    bad = {"max_num_seqs": 512, "gpu_memory_utilization": 0.95, "enforce_eager": False}
    assert veto_reason(_study_with(_history()), SPACE, "vllm", bad)
    assert veto_reason(_study_with(_history(), MAX_VETOES_IN_A_ROW), SPACE, "vllm", bad) is None


class _HiddenOom:
    """Passes validate, then OOMs at start for large batches with a high memory share."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def run(self, config, ctx):
        if config["max_num_seqs"] >= 128 and config["gpu_memory_utilization"] >= 0.9:
            raise EngineError("oom", "CUDA out of memory (injected)")
        return self.inner.run(config, ctx)


def test_study_vetoes_learned_failures_without_spending_budget(tmp_path):
    spec = parse_spec(
        {
            "name": "f",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 40},
            "engines": {
                "vllm": {
                    "max_model_len": {"value": 8192},
                    "dtype": {"value": "bfloat16"},
                    "quantization": {"value": None},
                    "kv_cache_dtype": {"value": "auto"},
                    "max_num_seqs": {"choices": [16, 32, 64, 128, 256, 512]},
                    "gpu_memory_utilization": {"choices": [0.85, 0.9, 0.95]},
                    "max_num_batched_tokens": {"value": 8192},
                    "enable_chunked_prefill": {"value": True},
                    "enable_prefix_caching": {"value": True},
                    "enforce_eager": {"value": False},
                    "block_size": {"value": 16},
                }
            },
            "budget": {"trials": 12},
            "baseline": False,
            "sampler": "random",
            "seed": 1,
            "storage": f"sqlite:///{tmp_path}/f.db",
        }
    )
    engines = {k: _HiddenOom(v) for k, v in build_engines(spec).items()}
    study = run_study(spec, engines=engines)
    reasons = [fail_reason(t) for t in study.trials]
    assert counted_trials(study) == 12
    assert VETO_REASON in reasons, "the failing region was never vetoed"
    vetoed = [t for t in study.trials if fail_reason(t) == VETO_REASON]
    assert all(t.state == TrialState.PRUNED for t in vetoed)
    assert len(study.trials) == 12 + len(vetoed) + reasons.count("invalid") + reasons.count(
        "duplicate"
    )
