"""The exported vllm_config.yaml read by vLLM's own argument parser (needs vLLM installed)."""

from __future__ import annotations

import pytest
import yaml

from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine


@pytest.mark.gpu
def test_vllms_parser_takes_the_exported_config_as_it_is(tmp_path, make_ctx):
    vllm_utils = pytest.importorskip(
        "vllm.utils.argparse_utils", reason="vLLM is not installed here (run on the GPU machine)"
    )
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():  # vLLM 0.26.0's parser infers the device while parsing
        pytest.skip("needs a GPU: vLLM's argument parser fails to infer a device on a CPU")
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.openai.cli_args import make_arg_parser

    engine = VllmEngine()
    ctx = make_ctx()
    space = engine.space(ModelSpec.model_validate("Llama-3.1-8B"), HardwareSpec(gpu="H200"))
    config = {p.name: p.default for p in space}
    config.update(quantization="fp8", kv_cache_dtype="fp8", speculative_method="ngram")
    bundle = engine.export(config, ctx)
    path = tmp_path / "vllm_config.yaml"
    path.write_text(bundle.files["vllm_config.yaml"])
    parser = make_arg_parser(vllm_utils.FlexibleArgumentParser())
    args = parser.parse_args(["serve", "--config", str(path)][1:])
    parsed = EngineArgs.from_cli_args(args)
    written = yaml.safe_load(path.read_text())
    assert parsed.max_num_seqs == written["max-num-seqs"]
    assert parsed.quantization == "fp8" and parsed.kv_cache_dtype == "fp8"
    assert parsed.speculative_config["method"] == "ngram"
