"""vLLM's knobs past precision and batch size: pinned at vLLM 0.26.0's defaults, written under
their real names only away from them, JSON-valued ones serialized as vLLM parses them."""

from __future__ import annotations

import dataclasses
import json

import yaml

from engines.sim import SimulatedEngine
from engines.space import apply_overrides, named_config
from engines.vllm import SIM_IGNORES, VllmEngine

KNOBS = {
    "async_scheduling": True,
    "stream_interval": 1,
    "max_num_partial_prefills": 1,
    "long_prefill_token_threshold": 0,
    "max_cudagraph_capture_size": None,
    "cudagraph_mode": None,
    "attention_backend": None,
    "performance_mode": "balanced",
    "api_server_count": 1,
    "scheduling_policy": "fcfs",
    "kv_offloading_size": None,
}


def _exported(engine: VllmEngine, config: dict, ctx) -> dict:
    text = engine.export(config, ctx).files["vllm_config.yaml"]
    return yaml.safe_load(text)


def test_knobs_are_pinned_at_vllm_defaults_with_help(make_ctx):
    ctx = make_ctx()
    space = {p.name: p for p in VllmEngine().space(ctx.model, ctx.hardware)}
    for name, default in KNOBS.items():
        assert space[name].choices == (default,) and space[name].default == default, name
        assert space[name].help, name


def test_defaults_write_no_knob_so_old_configs_serve_as_before(make_ctx):
    engine, ctx = VllmEngine(), make_ctx()
    config = engine.defaults(ctx.model, ctx.hardware)
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 8000)
    dashed = {"--" + name.replace("_", "-") for name in KNOBS}
    assert not dashed & set(argv) and "--compilation-config" not in argv
    assert not {k.replace("-", "_") for k in _exported(engine, config, ctx)} & set(KNOBS)


def test_knobs_away_from_defaults_use_vllm_names_and_forms(make_ctx):
    engine, ctx = VllmEngine(), make_ctx()
    config = {
        **engine.defaults(ctx.model, ctx.hardware),
        "async_scheduling": False,
        "stream_interval": 8,
        "max_num_partial_prefills": 4,
        "long_prefill_token_threshold": 512,
        "max_cudagraph_capture_size": 1024,
        "cudagraph_mode": "PIECEWISE",
        "attention_backend": "FLASHINFER",
        "api_server_count": 4,
    }
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 8000)
    assert "--no-async-scheduling" in argv and "--async-scheduling" not in argv
    for flag, value in {
        "--stream-interval": "8",
        "--max-num-partial-prefills": "4",
        "--long-prefill-token-threshold": "512",
        "--max-cudagraph-capture-size": "1024",
        "--attention-backend": "FLASHINFER",
        "--api-server-count": "4",
    }.items():
        assert argv[argv.index(flag) + 1] == value, flag
    assert json.loads(argv[argv.index("--compilation-config") + 1]) == {
        "cudagraph_mode": "PIECEWISE"
    }
    assert "--cudagraph-mode" not in argv
    exported = _exported(engine, config, ctx)  # vLLM's --config loader: a mapping -> JSON
    assert exported["compilation-config"] == {"cudagraph_mode": "PIECEWISE"}
    assert exported["no-async-scheduling"] is True and exported["stream-interval"] == 8


def test_a_spec_widens_a_knob_and_names_it_in_a_baseline(make_ctx):
    ctx = make_ctx()
    space = apply_overrides(
        VllmEngine().space(ctx.model, ctx.hardware),
        {
            "stream_interval": {"choices": [1, 8]},
            "attention_backend": {"choices": [None, "FLASHINFER"]},
        },
        "engines.vllm",
    )
    config = named_config(space, {"stream_interval": 8}, "baseline.vllm")
    assert config["stream_interval"] == 8 and config["attention_backend"] is None


def test_knob_rules_mirror_vllm_start_checks(make_ctx):
    engine, ctx = VllmEngine(), make_ctx()
    base = engine.defaults(ctx.model, ctx.hardware)
    for partial in (2, 4):  # 0.26.0 on an H200 (session 8): NotImplementedError at start
        concurrent = {**base, "max_num_partial_prefills": partial}
        reasons = engine.validate(concurrent, ctx)
        assert any(f"max_num_partial_prefills={partial}: vLLM refuses" in r for r in reasons)
    assert not engine.validate({**base, "max_num_partial_prefills": 1}, ctx)
    too_long = {**base, "long_prefill_token_threshold": 10**7}
    assert any("exceeds max_model_len" in r for r in engine.validate(too_long, ctx))


def test_the_simulator_ignores_the_knobs_it_does_not_model(make_ctx):
    """The knobs of SIM_IGNORES leave the sim's plan as it was; api_server_count, which it
    models (the API servers' share of the streaming), is in the plan."""
    ctx = make_ctx()
    sim = SimulatedEngine(VllmEngine())
    base = sim.defaults(ctx.model, ctx.hardware)
    tuned = {**base, "stream_interval": 8, "attention_backend": "FLASHINFER"}
    assert sim.plan(base, ctx) == sim.plan(tuned, ctx)
    assert "api_server_count" not in SIM_IGNORES
    assert sim.plan(base, ctx).api_servers == 1
    assert sim.plan({**base, "api_server_count": 4}, ctx).api_servers == 4


def _ngram(engine: VllmEngine, ctx, **changes) -> dict:
    base = engine.defaults(ctx.model, ctx.hardware)
    config = {k: v for k, v in base.items() if k != "async_scheduling"}
    return {**config, "speculative_method": "ngram", "num_speculative_tokens": 4,
            "prompt_lookup_max": 6, "prompt_lookup_min": 2, **changes}  # fmt: skip


def test_speculative_decoding_is_off_by_default_and_written_as_vllm_parses_it(make_ctx):
    engine, ctx = VllmEngine(), make_ctx()
    space = {p.name: p for p in engine.space(ctx.model, ctx.hardware)}
    assert space["speculative_method"].choices == (None,)
    assert "num_speculative_tokens" not in engine.defaults(ctx.model, ctx.hardware)
    config = _ngram(engine, ctx)
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 8000)
    expected = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 6,
                "prompt_lookup_min": 2}  # fmt: skip
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == expected
    assert "--async-scheduling" not in argv and "--no-async-scheduling" not in argv
    assert _exported(engine, config, ctx)["speculative-config"] == expected


def test_speculative_rules_and_the_sim_leaves_it_to_the_real_stage(make_ctx):
    engine, ctx = VllmEngine(), make_ctx()
    bad = _ngram(engine, ctx, prompt_lookup_min=7)
    assert "prompt_lookup_min=7 must be <= prompt_lookup_max=6" in engine.validate(bad, ctx)
    sim = SimulatedEngine(engine)
    assert sim.plan(_ngram(engine, ctx), ctx) == sim.plan(
        engine.defaults(ctx.model, ctx.hardware), ctx
    )


def test_the_standin_accepts_and_records_the_new_knobs(make_ctx, standin_factory):
    engine, ctx = VllmEngine(), make_ctx()
    config = {**_ngram(engine, ctx), "stream_interval": 8, "cudagraph_mode": "PIECEWISE"}
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 0)
    flags = argv[argv.index("--host") + 4 :]  # past MODEL --host H --port P
    server = standin_factory(*flags)
    log = server.log_path.read_text()
    recorded = json.loads(log.split("non-default args: ", 1)[1].splitlines()[0])
    assert recorded["speculative-config"]["method"] == "ngram"
    assert recorded["compilation-config"] == {"cudagraph_mode": "PIECEWISE"}
    assert recorded["stream-interval"] == "8"


def _draft(engine: VllmEngine, ctx, **changes) -> dict:
    config = _ngram(engine, ctx, speculative_method="draft_model", draft_tensor_parallel_size=1)
    return {k: v for k, v in {**config, **changes}.items() if not k.startswith("prompt_lookup")}


def _with_draft(ctx, draft: str):
    return dataclasses.replace(ctx, model=ctx.model.model_copy(update={"draft_path": draft}))


def test_a_draft_model_the_spec_names_is_written_into_speculative_config(make_ctx, tmp_path):
    engine = VllmEngine()
    draft = tmp_path / "llama-3.2-1b"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps({"vocab_size": 128256}))
    ctx = _with_draft(make_ctx(), str(draft))
    config = _draft(engine, ctx)
    assert engine.validate(config, ctx) == []
    expected = {"method": "draft_model", "num_speculative_tokens": 4,
                "draft_tensor_parallel_size": 1, "model": str(draft)}  # fmt: skip
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 8000)
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == expected
    assert _exported(engine, config, ctx)["speculative-config"] == expected
    space = {p.name: p for p in engine.space(ctx.model, ctx.hardware)}
    assert space["draft_tensor_parallel_size"].when == {"speculative_method": ("draft_model",)}
    assert "draft_model" in space["num_speculative_tokens"].when["speculative_method"]


def test_draft_model_rules_mirror_vllms_speculative_config_checks(make_ctx, tmp_path):
    engine, plain = VllmEngine(), make_ctx()
    reasons = engine.validate(_draft(engine, plain), plain)
    assert any("needs model.draft_path" in r for r in reasons)
    other = tmp_path / "smollm2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"vocab_size": 49152}))
    ctx = _with_draft(plain, str(other))
    reasons = engine.validate(_draft(engine, ctx, draft_tensor_parallel_size=2), ctx)
    assert any(
        "draft_tensor_parallel_size=2 must be 1 or tensor_parallel_size=1" in r for r in reasons
    )
    assert any("vocab_size 49152 differs from the model's 128256" in r for r in reasons)
    hub = _with_draft(plain, "meta-llama/Llama-3.2-1B")  # not local: vLLM checks it at start
    assert engine.validate(_draft(engine, hub), hub) == []


def test_rules_follow_the_targeted_release(make_ctx, tmp_path):
    """Each rule as the release's own source has it: 0.33.0 keeps the n-gram window and draft
    checks, has no max_num_partial_prefills to refuse, and in both releases a draft model keeps
    async scheduling (only CPU n-gram drafting turns it off)."""
    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps({"vocab_size": 128256}))
    ctx = _with_draft(make_ctx(), str(draft))
    for version in ("0.26.0", "0.33.0"):
        engine = VllmEngine(version=version)
        space = {p.name: p for p in engine.space(ctx.model, ctx.hardware)}
        assert space["async_scheduling"].when == {"speculative_method": (None, "draft_model")}
        bad = _ngram(engine, ctx, prompt_lookup_min=7)
        assert any("prompt_lookup_min=7" in r for r in engine.validate(bad, ctx)), version
        wide = _draft(engine, ctx, draft_tensor_parallel_size=4)
        assert any("draft_tensor_parallel_size=4" in r for r in engine.validate(wide, ctx))
    old, new = VllmEngine(version="0.26.0"), VllmEngine(version="0.33.0")
    assert "max_num_partial_prefills" not in {p.name for p in new.space(ctx.model, ctx.hardware)}
    partial = {**old.defaults(ctx.model, ctx.hardware), "max_num_partial_prefills": 4}
    assert any("max_num_partial_prefills=4" in r for r in old.validate(partial, ctx))


def test_the_standin_accepts_a_draft_model_config(make_ctx, standin_factory, tmp_path):
    engine = VllmEngine()
    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps({"vocab_size": 128256}))
    ctx = _with_draft(make_ctx(), str(draft))
    argv = engine.serve_argv(_draft(engine, ctx), ctx, "127.0.0.1", 0)
    server = standin_factory(*argv[argv.index("--host") + 4 :])
    log = server.log_path.read_text()
    recorded = json.loads(log.split("non-default args: ", 1)[1].splitlines()[0])
    assert recorded["speculative-config"]["method"] == "draft_model"
    assert recorded["speculative-config"]["model"] == str(draft)
