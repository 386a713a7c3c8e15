from engines import RunContext, get_engine
from engines.specs import HardwareSpec, ModelSpec
from engines.workload import WorkloadSpec


def _ctx(model="Llama-3.1-8B", gpu="H100-SXM", count=1, workload=None):
    return RunContext(
        model=ModelSpec.model_validate(model),
        hardware=HardwareSpec(gpu=gpu, count=count),
        workload=workload or WorkloadSpec(),
    )


def _config(engine, ctx, **changes):
    config = engine.defaults(ctx.model, ctx.hardware)
    config.update(changes)
    return config


def test_defaults_are_valid_on_an_h100():
    engine = get_engine("vllm", "real")
    ctx = _ctx()
    assert engine.validate(_config(engine, ctx, max_model_len=8192), ctx) == []


def test_parallelism_rules():
    engine = get_engine("vllm", "real")
    ctx = _ctx(count=2)
    reasons = engine.validate(
        _config(engine, ctx, tensor_parallel_size=2, pipeline_parallel_size=2), ctx
    )
    assert reasons and "exceeds the 2 GPU" in reasons[0]
    ctx3 = _ctx(
        model={
            "name": "odd",
            "params_b": 1,
            "num_layers": 4,
            "hidden_size": 768,
            "num_attention_heads": 12,
            "num_kv_heads": 12,
            "head_dim": 64,
            "intermediate_size": 3072,
            "vocab_size": 1000,
            "max_context": 4096,
        },
        count=8,
    )
    reasons = engine.validate(_config(engine, ctx3, tensor_parallel_size=8), ctx3)
    assert any("does not divide the 12 attention heads" in r for r in reasons)


def test_fp8_rejected_below_ada():
    engine = get_engine("vllm", "real")
    ctx = _ctx(gpu="A100-80GB")
    reasons = engine.validate(_config(engine, ctx, quantization="fp8", max_model_len=8192), ctx)
    assert reasons and "compute capability >= 8.9" in reasons[0]


def test_memory_fit_rejects_70b_bf16_on_one_gpu_and_accepts_tp4():
    engine = get_engine("vllm", "real")
    one = _ctx(model="Llama-3.1-70B")
    reasons = engine.validate(_config(engine, one, max_model_len=8192), one)
    assert reasons and reasons[0].startswith("does not fit")
    four = _ctx(model="Llama-3.1-70B", count=4)
    assert (
        engine.validate(_config(engine, four, max_model_len=8192, tensor_parallel_size=4), four)
        == []
    )


def test_batched_tokens_below_model_len_needs_chunked_prefill():
    engine = get_engine("vllm", "real")
    ctx = _ctx()
    config = _config(
        engine, ctx, max_model_len=8192, max_num_batched_tokens=2048, enable_chunked_prefill=False
    )
    assert any("needs chunked prefill" in r for r in engine.validate(config, ctx))
    config["enable_chunked_prefill"] = True
    assert engine.validate(config, ctx) == []


def test_awq_needs_a_checkpoint():
    engine = get_engine("vllm", "real")
    ctx = _ctx()
    reasons = engine.validate(_config(engine, ctx, quantization="awq", max_model_len=8192), ctx)
    assert reasons and "pre-quantized checkpoint" in reasons[0]


def test_workload_longer_than_model_len_is_rejected():
    engine = get_engine("vllm", "real")
    ctx = _ctx(workload=WorkloadSpec(input_tokens=8000, output_tokens=500))
    reasons = engine.validate(_config(engine, ctx, max_model_len=8192), ctx)
    assert reasons and "longest request (8500 tokens)" in reasons[0]
