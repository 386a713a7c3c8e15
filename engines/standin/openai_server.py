"""A stand-in OpenAI-compatible streaming server with exact, injectable timing and faults.

It speaks real HTTP/1.1 on 127.0.0.1 (asyncio streams, stdlib only) with the routes a vLLM or
``trtllm-serve`` server has: ``/health``, ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (SSE chunks in OpenAI format, a final usage chunk, ``data: [DONE]``) and
``/metrics``. It lets the load generator, the server lifecycle and the tuner be tested on a CPU.

Timing is deterministic: a request waits for one of ``--max-concurrency`` slots (default
``--max-num-seqs``, else unlimited), then its first token leaves ``--ttft-ms`` after it got the
slot and token ``i`` leaves ``i * --itl-ms`` after the first (an absolute schedule, so sleeping
errors do not add up). Queueing for a slot therefore shows up as TTFT, as on a saturated server.

Tokens are words: a prompt has ``len(prompt.split())`` tokens (or, when the model argument is a
directory with ``tokenizer.json`` and ``tokenizers`` is installed, that tokenizer's count) and the
output is ``" t0 t1 ..."``, one word a chunk. With ``echo`` and ``logprobs``, prompt words get
:func:`token_logprob` (first token ``None``, as the OpenAI API does), so accuracy code can be
tested against known values. ``top_logprobs`` come from :func:`position_logprobs`, a fixed
next-word distribution per position (for prompt and generated words alike); ``--precision-noise``
perturbs it deterministically, as a quantized model perturbs a bf16 one, and vLLM's
``--quantization``/``--kv-cache-dtype`` flags set that noise (:data:`PRECISION_NOISE`), so
agreement and KL against a reference can be checked by hand.

``vllm serve``'s argv is accepted as is (``MODEL --host H --port P --max-num-seqs N ...``):
flags it does not know are ignored. Faults (``--fault``) imitate how real servers fail. With
``--enable-prefix-caching`` it remembers the prompts it has served and counts repeats in
``/metrics``; ``--cached-ttft-ms`` makes a repeat answer that fast, as a cached prefill would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import selectors
import signal
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULTS = (
    "crash_at_start",
    "oom_exit",
    "hang_before_health",
    "http_500",
    "stream_cut",
    "slow_start",
)
_OOM_LINES = (
    "ERROR [core.py] EngineCore failed to start.\n"
    "Traceback (most recent call last):\n"
    '  File "vllm/v1/worker/gpu_model_runner.py", line 2210, in load_model\n'
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total "
    "capacity of 79.19 GiB of which 512.00 MiB is free. Including non-PyTorch memory, this "
    "process has 78.67 GiB memory in use.\n"
    "RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {'EngineCore': 1}\n"
)
# vLLM's refusal when the memory fraction leaves no room for KV-cache blocks after the weights
_NO_KV_CACHE_LINE = (
    "ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine."
)
MIN_MEMORY_UTILIZATION = 0.2  # weights and activations of the stand-in: a fifth of the GPU
log = logging.getLogger("standin")


def token_logprob(word: str) -> float:
    """The log-probability the stand-in gives a prompt word when echoing logprobs (in (-4, 0))."""
    return -round(0.01 + (zlib.crc32(word.encode()) % 1000) / 250.0, 4)


# Noise a vLLM flag adds to every logprob (amplitude, nats); bf16 with an auto KV cache adds none.
PRECISION_NOISE = {
    "quantization": {"fp8": 0.6, "awq": 1.2, "gptq": 1.2},
    "kv_cache_dtype": {"fp8": 0.3},
}
_ALTERNATIVES = ("the", "of", "and", "to", "in", "that", "a", "is", "for", "be", "by", "as")


def position_logprobs(prev: str, word: str, k: int, noise: float = 0.0) -> dict[str, float]:
    """Top-``k`` next-word logprobs after ``prev``, plus ``word`` (the token actually there).

    Candidates are ``word`` (logprob :func:`token_logprob`) and four words of a small list chosen
    by ``prev`` (logprobs in [-3, -0.5)). ``noise`` adds ``noise * u`` to each, ``u`` in [-1, 1] a
    hash of (prev, candidate), clipped below 0: deterministic, like a quantized model's drift.
    """
    start = zlib.crc32(prev.encode()) % len(_ALTERNATIVES)
    alts = [_ALTERNATIVES[(start + j) % len(_ALTERNATIVES)] for j in range(4)]
    raw = {a: -round(0.5 + (zlib.crc32(f"{prev}|{a}".encode()) % 1000) / 400.0, 4) for a in alts}
    raw[word] = token_logprob(word)
    if noise:
        for token, value in raw.items():
            u = (zlib.crc32(f"noise|{prev}|{token}".encode()) % 2001 - 1000) / 1000.0
            raw[token] = round(min(value + noise * u, -1e-4), 4)
    ranked = sorted(raw.items(), key=lambda kv: (-kv[1], kv[0]))[: max(k, 1)]
    return {**dict(ranked), word: raw[word]}


@dataclass
class Settings:
    """What the stand-in was started with."""

    model: str = "standin"
    ttft_s: float = 0.05
    itl_s: float = 0.01
    jitter_s: float = 0.0
    max_concurrency: int | None = None
    fault: str | None = None
    fault_every: int = 1
    startup_s: float = 0.0
    seed: int = 0
    precision_noise: float = 0.0
    lossy_speculation: bool = False  # a buggy drafter: every third generated word changes
    prefix_caching: bool = False
    cached_ttft_s: float | None = None  # TTFT of a prompt seen before (prefix caching on)
    speculative_tokens: int = 0  # --speculative-config's num_speculative_tokens (0: off)


@dataclass
class State:
    """Counters shared by every connection (for ``/metrics`` and fault scheduling)."""

    settings: Settings
    ready_at: float
    slots: asyncio.Semaphore | None
    rng: random.Random
    lead_s: float = 0.0
    tokenizer: Any = None
    running: int = 0
    waiting: int = 0
    seen_prompts: set[int] = field(default_factory=set)
    totals: dict[str, int] = field(
        default_factory=lambda: {
            "prompt_tokens": 0,
            "generation_tokens": 0,
            "request_success": 0,
            "requests": 0,
            "prefix_cache_queries": 0,  # prompt tokens looked up (vLLM counts tokens too)
            "prefix_cache_hits": 0,
            "spec_decode_num_drafts": 0,  # with --speculative-config, as vLLM counts them
            "spec_decode_num_draft_tokens": 0,
            "spec_decode_num_accepted_tokens": 0,
        }
    )


def count_tokens(state: State, text: str) -> int:
    if state.tokenizer is not None:
        return len(state.tokenizer.encode(text).ids)
    return len(text.split())


# ---------------------------------------------------------------- HTTP plumbing
async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, Any]] | None:
    """One request: method, path and JSON body (empty dict when none); None at end of stream."""
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return method, path.split("?", 1)[0], json.loads(body) if body else {}


def head(status: int, content_type: str, length: int | None = None) -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{framing}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()


def whole(status: int, body: Any, content_type: str = "application/json") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return head(status, content_type, len(data)) + data


def sse_chunk(payload: Any) -> bytes:
    data = b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    data += b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "BadRequestError" if status == 400 else "InternalServerError",
            "param": None,
            "code": status,
        }
    }


# ---------------------------------------------------------------- routes
async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: State) -> None:
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                break
            method, path, body = request
            if not await route(method, path, body, reader, writer, state):
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def route(
    method: str,
    path: str,
    body: dict[str, Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    state: State,
) -> bool:
    """Answer one request; False closes the connection."""
    ready = time.monotonic() >= state.ready_at
    if path == "/health":
        writer.write(whole(200 if ready else 503, b""))
    elif path == "/v1/models":
        writer.write(
            whole(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": state.settings.model,
                            "object": "model",
                            "created": 0,
                            "owned_by": "standin",
                            "root": state.settings.model,
                            "parent": None,
                        }
                    ],
                },
            )
        )
    elif path == "/metrics":
        writer.write(whole(200, metrics_text(state).encode(), "text/plain; version=0.0.4"))
    elif path in ("/v1/completions", "/v1/chat/completions") and method == "POST":
        if not ready:
            writer.write(whole(503, error_body(503, "server is starting")))
        else:
            chat = path.endswith("chat/completions")
            return await generate(chat, body, reader, writer, state)
    else:
        writer.write(whole(404, error_body(404, f"no route {method} {path}")))
    await writer.drain()
    return True


def metrics_text(state: State) -> str:
    name = state.settings.model
    lines = [
        f'vllm:num_requests_running{{model_name="{name}"}} {state.running}',
        f'vllm:num_requests_waiting{{model_name="{name}"}} {state.waiting}',
    ]
    lines += [
        f'vllm:{key}_total{{model_name="{name}"}} {value}' for key, value in state.totals.items()
    ]
    return "\n".join(lines) + "\n"


def prompt_text(chat: bool, body: dict[str, Any]) -> str:
    if chat:
        return " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def remember_prompt(state: State, prompt: str, tokens: int) -> bool:
    """With prefix caching on, record ``prompt`` and say whether it is served from cache (seen
    before, and ``--cached-ttft-ms`` given; vLLM would skip its prefill). Hits are counted in
    ``/metrics`` as ``vllm:prefix_cache_hits_total`` either way."""
    if not state.settings.prefix_caching:
        return False
    key = zlib.crc32(prompt.encode())
    seen = key in state.seen_prompts
    state.seen_prompts.add(key)
    state.totals["prefix_cache_queries"] += tokens
    state.totals["prefix_cache_hits"] += tokens if seen else 0
    return seen and state.settings.cached_ttft_s is not None


def client_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """The client closed its connection (end of stream read, or reset)."""
    return reader.at_eof() or reader.exception() is not None or writer.is_closing()


async def generate(
    chat: bool,
    body: dict[str, Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    state: State,
) -> bool:
    """Serve one completion, streamed or whole, honouring slots, timing and faults.

    A request whose client has gone (its connection closed) is dropped when it gets its slot or
    before its next streamed token, as vLLM aborts it: a load generator that stops a run early
    leaves no queue behind to slow the next one."""
    settings = state.settings
    state.totals["requests"] += 1
    number = state.totals["requests"]
    faulty = settings.fault in ("http_500", "stream_cut") and number % settings.fault_every == 0
    if faulty and settings.fault == "http_500":
        writer.write(whole(500, error_body(500, "injected fault: http_500")))
        await writer.drain()
        return True
    prompt = prompt_text(chat, body)
    n_prompt = count_tokens(state, prompt)
    ttft_s = (
        settings.ttft_s if not remember_prompt(state, prompt, n_prompt) else settings.cached_ttft_s
    )
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    n_out = 16 if asked is None else int(asked)  # 0 is honoured: echo-only scoring
    state.waiting += 1
    if state.slots is not None:
        await state.slots.acquire()
    state.waiting -= 1
    state.running += 1
    try:
        if client_gone(reader, writer):
            return False
        if body.get("stream"):
            return await stream(chat, body, n_prompt, n_out, faulty, reader, writer, state, ttft_s)
        await asyncio.sleep(ttft_s + max(0, n_out - 1) * settings.itl_s)
        writer.write(whole(200, full_response(chat, body, prompt, n_prompt, n_out, state)))
        await writer.drain()
        state.totals["request_success"] += 1
        return True
    finally:
        state.running -= 1
        if state.slots is not None:
            state.slots.release()


async def stream(
    chat: bool,
    body: dict[str, Any],
    n_prompt: int,
    n_out: int,
    faulty: bool,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    state: State,
    ttft_s: float,
) -> bool:
    settings = state.settings
    loop = asyncio.get_running_loop()
    rid = f"cmpl-{state.totals['requests']}"
    base = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": settings.model,
    }
    writer.write(head(200, "text/event-stream"))
    start = loop.time()
    first = start + ttft_s + state.rng.uniform(-settings.jitter_s, settings.jitter_s)
    for i in range(n_out):
        due = first + i * settings.itl_s
        if i and settings.jitter_s:
            due += state.rng.uniform(-settings.jitter_s, settings.jitter_s)
        delay = due - loop.time() - state.lead_s
        if delay > 0:
            await writer.drain()
            await asyncio.sleep(delay)
            if client_gone(reader, writer):
                return False
        if faulty and i == n_out // 2:
            await writer.drain()
            return False  # cut mid-stream: the chunked body never terminates
        choice: dict[str, Any] = {
            "index": 0,
            "logprobs": None,
            "finish_reason": "length" if i == n_out - 1 else None,
        }
        if chat:
            choice["delta"] = (
                {"content": f" t{i}"} if i else {"role": "assistant", "content": " t0"}
            )
        else:
            choice["text"] = f" t{i}"
        writer.write(sse_chunk({**base, "choices": [choice]}))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        usage = {
            "prompt_tokens": n_prompt,
            "total_tokens": n_prompt + n_out,
            "completion_tokens": n_out,
        }
        writer.write(sse_chunk({**base, "choices": [], "usage": usage}))
    writer.write(sse_chunk(b"[DONE]") + b"0\r\n\r\n")
    await writer.drain()
    count_generated(state, n_prompt, n_out)
    state.totals["request_success"] += 1
    return True


def count_generated(state: State, n_prompt: int, n_out: int) -> None:
    """Add one answered request to the counters. With speculation on, every step drafts
    ``k = speculative_tokens`` and accepts ``k // 2`` of them (a fixed rate: the stand-in has no
    model), so a step yields ``1 + k // 2`` tokens, as vLLM's counters would then read."""
    state.totals["prompt_tokens"] += n_prompt
    state.totals["generation_tokens"] += n_out
    k = state.settings.speculative_tokens
    if k:
        steps = -(-n_out // (1 + k // 2))
        state.totals["spec_decode_num_drafts"] += steps
        state.totals["spec_decode_num_draft_tokens"] += steps * k
        state.totals["spec_decode_num_accepted_tokens"] += steps * (k // 2)


def full_response(
    chat: bool, body: dict[str, Any], prompt: str, n_prompt: int, n_out: int, state: State
) -> dict[str, Any]:
    lossy = state.settings.lossy_speculation
    text = "".join(f" s{i}" if lossy and i % 3 == 2 else f" t{i}" for i in range(n_out))
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        k = body.get("logprobs")
        if body.get("echo"):
            text = prompt + text
            if k is not None:
                choice["logprobs"] = echo_logprobs(text, int(k), state.settings.precision_noise)
        elif k is not None:
            generated = echo_logprobs(prompt + text, int(k), state.settings.precision_noise)
            n_words = len(prompt.split())
            choice["logprobs"] = {key: values[n_words:] for key, values in generated.items()}
        choice["text"] = text
    count_generated(state, n_prompt, n_out)
    return {
        "id": f"cmpl-{state.totals['requests']}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": state.settings.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": n_prompt,
            "total_tokens": n_prompt + n_out,
            "completion_tokens": n_out,
        },
    }


def echo_logprobs(text: str, k: int = 1, noise: float = 0.0) -> dict[str, Any]:
    """Logprobs of every word of ``text`` in the legacy completions format (the first has none).

    Without noise a word's logprob is :func:`token_logprob`; ``top_logprobs`` hold the top ``k``
    of :func:`position_logprobs` plus the word itself, as vLLM returns them.
    """
    found = [(m.group(), m.start()) for m in re.finditer(r"\S+", text)]
    words = [w for w, _ in found]
    tops: list[dict[str, float] | None] = [None] + [
        position_logprobs(prev, word, k, noise)
        for prev, word in zip(words, words[1:], strict=False)
    ]
    values = [None if top is None else top[word] for top, word in zip(tops, words, strict=True)]
    return {
        "tokens": words,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": [offset for _, offset in found],
    }


# ---------------------------------------------------------------- start-up
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    """Read our flags and the vLLM-like ones we honour; unknown flags are ignored."""
    parser = argparse.ArgumentParser(prog="standin", allow_abbrev=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--fault", choices=FAULTS, default=None)
    parser.add_argument("--fault-every", type=int, default=1)
    parser.add_argument("--startup-s", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision-noise",
        type=float,
        default=None,
        help="perturb logprobs by up to this many nats (default: from --quantization and "
        "--kv-cache-dtype, see PRECISION_NOISE)",
    )
    parser.add_argument(
        "--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=False
    )
    parser.add_argument(
        "--cached-ttft-ms",
        type=float,
        default=None,
        help="with --enable-prefix-caching: TTFT of a prompt seen before (default: no change)",
    )
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--kv-cache-dtype", default=None)
    parser.add_argument(
        "--loop",
        choices=("select", "epoll"),
        default="select",
        help="select: microsecond timers (up to ~1000 connections); epoll: "
        "timers rounded up to whole milliseconds, no connection limit",
    )
    parser.add_argument("--ignore-sigterm", action="store_true")
    for option in _JSON_OPTIONS:  # parsed as vLLM's argparse does: bad JSON exits 2 at start
        parser.add_argument(f"--{option}", type=json.loads, default=None)
    parser.add_argument(
        "--lossy-speculation",
        action="store_true",
        help="with --speculative-config, change every third generated word (a speculative "
        "decoder that does not keep the target model's outputs)",
    )
    parser.add_argument(
        "--spawn-child",
        action="store_true",
        help="start a sleeping child in our process group, like vLLM's EngineCore",
    )
    model = argv[0] if argv and not argv[0].startswith("-") else None
    args, unknown = parser.parse_known_args(argv[1:] if model else argv)
    args.recorded = _recorded(args, unknown)
    model = (args.served_model_name or [None])[0] or args.model or model or "standin"
    startup = (
        args.startup_s
        if args.startup_s is not None
        else (1.0 if args.fault == "slow_start" else 0.0)
    )
    settings = Settings(
        model=model,
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        max_concurrency=args.max_concurrency or args.max_num_seqs,
        fault=args.fault,
        fault_every=max(1, args.fault_every),
        startup_s=startup,
        seed=args.seed,
        prefix_caching=args.enable_prefix_caching,
        cached_ttft_s=None if args.cached_ttft_ms is None else args.cached_ttft_ms / 1000,
        precision_noise=(
            args.precision_noise
            if args.precision_noise is not None
            else PRECISION_NOISE["quantization"].get(args.quantization or "", 0.0)
            + PRECISION_NOISE["kv_cache_dtype"].get(args.kv_cache_dtype or "", 0.0)
        ),
        lossy_speculation=args.lossy_speculation and args.speculative_config is not None,
        speculative_tokens=int((args.speculative_config or {}).get("num_speculative_tokens", 0)),
    )
    return args, settings


_JSON_OPTIONS = ("speculative-config", "compilation-config")


def _no_room_for_kv_cache(recorded: dict[str, Any]) -> bool:
    """Whether ``--gpu-memory-utilization`` is below what the stand-in's weights take, so a
    real server would refuse to start for want of KV-cache blocks."""
    try:
        fraction = float(recorded.get("gpu-memory-utilization", 1.0))
    except (TypeError, ValueError):
        return False
    return fraction < MIN_MEMORY_UTILIZATION


def _recorded(args: argparse.Namespace, unknown: list[str]) -> dict[str, Any]:
    """The vLLM options this stand-in was started with and does not act on (``--flag value``
    or a bare switch), plus the JSON ones parsed: logged at start as vLLM logs its
    non-default args, so a test can see what a real server would have been given."""
    out: dict[str, Any] = {}
    for i, token in enumerate(unknown):
        if token.startswith("--"):
            nxt = unknown[i + 1] if i + 1 < len(unknown) else None
            out[token[2:]] = True if nxt is None or nxt.startswith("--") else nxt
    for option in _JSON_OPTIONS:
        value = getattr(args, option.replace("-", "_"))
        if value is not None:
            out[option] = value
    return out


def load_tokenizer(model: str) -> Any:
    path = Path(model) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    return Tokenizer.from_file(str(path))


async def timer_lead(samples: int = 15) -> float:
    """How late this loop wakes from a sleep (median of short sleeps), so tokens can be sent on
    time instead of systematically late; a few tenths of a millisecond on Linux."""
    loop = asyncio.get_running_loop()
    lateness = []
    for _ in range(samples):
        began = loop.time()
        await asyncio.sleep(0.002)
        lateness.append(loop.time() - began - 0.002)
    return min(max(sorted(lateness)[samples // 2], 0.0), 0.002)


async def serve(args: argparse.Namespace, settings: Settings) -> None:
    if settings.fault == "hang_before_health":
        print("INFO Loading model weights ...", flush=True)
        await asyncio.Event().wait()
    slots = asyncio.Semaphore(settings.max_concurrency) if settings.max_concurrency else None
    state = State(
        settings=settings,
        ready_at=time.monotonic() + settings.startup_s,
        slots=slots,
        rng=random.Random(settings.seed),
        lead_s=await timer_lead(),
        tokenizer=load_tokenizer(settings.model),
    )
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, state), args.host, args.port, reuse_address=True, backlog=4096
    )
    print(
        f"INFO Starting stand-in server on http://{args.host}:{args.port} (model {settings.model})",
        flush=True,
    )
    async with server:
        await server.serve_forever()


def _run(main_coro: Any, loop_kind: str) -> None:
    """Run on a select() loop by default: epoll rounds every timer up to a whole millisecond,
    which would bias the injected TTFT and ITL by up to 1 ms."""
    if loop_kind == "epoll":
        asyncio.run(main_coro)
        return
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(main_coro)
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    print(f"INFO stand-in server version 0, serving model {settings.model}", flush=True)
    print(f"INFO non-default args: {json.dumps(args.recorded, sort_keys=True)}", flush=True)
    if settings.fault == "crash_at_start":
        print(
            "Traceback (most recent call last):\nRuntimeError: Engine core initialization "
            "failed. See root cause above.",
            file=sys.stderr,
            flush=True,
        )
        return 1
    if settings.fault == "oom_exit":
        time.sleep(0.2)
        print(_OOM_LINES, file=sys.stderr, end="", flush=True)
        return 1
    if _no_room_for_kv_cache(args.recorded):
        print(_NO_KV_CACHE_LINE, file=sys.stderr, flush=True)
        return 1
    if args.spawn_child:
        import subprocess

        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _run(serve(args, settings), args.loop)
    except OSError as exc:
        print(f"Traceback (most recent call last):\nOSError: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
