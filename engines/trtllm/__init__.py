"""TensorRT-LLM behind the engine interface: ``trtllm-serve`` on the PyTorch backend or on a
``trtllm-build`` engine, with option names, flags and YAML keys of the pinned release.

``engines.trtllm:TrtllmEngine`` is the registered class; the rest is private (``_engine`` space,
rules, argv and export; ``_llmargs`` the checked options YAML; ``_build`` the engine build and
its cache).
"""

from engines.trtllm._build import BUILD_PARAMS
from engines.trtllm._engine import RUNTIME_PARAMS, TRTLLM_RELEASE, TrtllmEngine

__all__ = ["BUILD_PARAMS", "RUNTIME_PARAMS", "TRTLLM_RELEASE", "TrtllmEngine"]
