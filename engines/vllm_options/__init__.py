"""``vllm serve``'s options per vLLM release, as data read from each release's own source
(:mod:`engines.vllm_options.make_table`), and the checks servetune runs against them."""

from engines.vllm_options.make_table import compare, make_table
from engines.vllm_options.walk import read_source

__all__ = ["compare", "make_table", "read_source"]
