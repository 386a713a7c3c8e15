# A miniature of vLLM's layout for tests/engines/test_vllm_versions.py (written for servetune).
from vllm.entrypoints.openai.cli_args import make_arg_parser  # noqa: F401
