"""Real-server measurement shared by every OpenAI-compatible engine (vLLM, TensorRT-LLM).

:mod:`.measure` is what an engine's ``run`` calls; the rest are its parts: :mod:`.lifecycle`
(process, port, health, failure reasons), :mod:`.binding` (which address servers listen on), :mod:`.pool` (one server reused across trials),
:mod:`.loadgen` with :mod:`.loadgen_worker` and :mod:`.sse_client` (the streaming load
generator), :mod:`.prompts` and :mod:`.request_source` (prompts of exact length),
:mod:`.capacity` and :mod:`.overload` (the capacity search and its early stop), :mod:`.power`
(NVML energy) and :mod:`.request_log` (per-request traces).
"""

from engines.serving.measure import close_servers, measure_reference, measure_server, server_command

__all__ = ["close_servers", "measure_reference", "measure_server", "server_command"]
