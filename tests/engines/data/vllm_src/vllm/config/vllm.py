from vllm.config.speculative import SpeculativeConfig
from vllm.config.utils import config


@config
class VllmConfig:
    speculative_config: SpeculativeConfig | None = None
