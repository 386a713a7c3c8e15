from typing import Literal

from vllm.config.utils import config

NgramTypes = Literal["ngram"]
SpeculativeMethod = Literal["draft_model", NgramTypes]


@config
class SpeculativeConfig:
    method: SpeculativeMethod | None = None
    num_speculative_tokens: int = None
    prompt_lookup_max: int | None = None
