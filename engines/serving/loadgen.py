"""Drive an OpenAI-compatible server with planned traffic and time every streamed chunk.

One shared ``httpx.AsyncClient`` sends ``/v1/completions`` (or ``/v1/chat/completions``) requests
with ``stream: true``, ``stream_options.include_usage``, ``ignore_eos`` and ``max_tokens`` equal
to the planned output length, either closed-loop (N workers, each sending its next request when
the last one ends) or open-loop at the plan's arrival offsets (optionally capped at N in flight).

Timing follows ``vllm bench serve`` with ``time.perf_counter``: a request starts just before it is
sent; TTFT is the first chunk that carries text; ITL is the gap between consecutive text chunks
(one per chunk, not per token); the request ends at its last text chunk. Output tokens come from
the usage chunk when the server sends one, else one per text chunk. Warmup requests run first
and are left out; the measured window runs from the first measured send to the last completion.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from engines.metrics import RequestRecord

if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    # httpcore tries `import sniffio` several times per request; when it is not installed each
    # failed import searches sys.path (~0.3 ms, a third of a loopback TTFT). A None entry makes
    # the import fail at once, which httpcore already handles as "running under asyncio".
    sys.modules["sniffio"] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class LoadRequest:
    """One request to send: its prompt and planned token counts."""

    prompt: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LoadResult:
    """Measured requests (warmup excluded), the measured window and the warmup requests."""

    records: list[RequestRecord]
    duration_s: float
    warmup_records: list[RequestRecord] = field(default_factory=list)


@dataclass
class _Stream:
    """What one response stream delivered so far."""

    sent: float | None = None
    first: float | None = None
    last: float | None = None
    itl: list[float] = field(default_factory=list)
    chunks: int = 0
    usage: Mapping[str, Any] | None = None
    done: bool = False
    error: str | None = None

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore trace hook: stamp the moment the request's headers start going out."""
        if event == "http11.send_request_body.complete":
            self.sent = time.perf_counter()

    def feed(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return  # comments, event names, blank keep-alives
        payload = line[5:].strip().decode()
        if payload == "[DONE]":
            self.done = True
            return
        data = _decode(payload)
        if "error" in data and not data.get("choices"):
            self.error = "stream_error"
            return
        if data.get("usage"):
            self.usage = data["usage"]
        choices = data.get("choices")
        if not choices:
            return
        choice = choices[0]
        text = (
            choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
        )
        if not text:
            return
        if self.first is None:
            self.first = now
        else:
            self.itl.append(now - self.last)  # type: ignore[operator]
        self.last = now
        self.chunks += 1


_decode = json.JSONDecoder().decode


def request_body(
    model: str, request: LoadRequest, chat: bool, extra_body: Mapping[str, Any] | None
) -> bytes:
    """The JSON body for one request (encoded once, before timing starts)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
        body["max_completion_tokens"] = request.output_tokens
    else:
        body["prompt"] = request.prompt
    body.update(extra_body or {})
    return json.dumps(body).encode()


async def send_one(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    request: LoadRequest,
    t0: float,
    timeout_s: float,
) -> RequestRecord:
    """Send one streamed request and time it; failures become a record with ``error`` set."""
    stream = _Stream()
    start = time.perf_counter()
    try:
        await asyncio.wait_for(_consume(client, url, body, stream), timeout_s)
    except asyncio.TimeoutError:
        stream.error = "timeout"
    except httpx.ConnectError:
        stream.error = "connect"
    except httpx.TimeoutException:
        stream.error = "timeout"
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        stream.error = "stream_cut"
    except (json.JSONDecodeError, UnicodeDecodeError):
        stream.error = "bad_chunk"
    end = stream.last if stream.last is not None else time.perf_counter()
    if stream.error is None and not stream.done:
        stream.error = "stream_cut"
    if stream.error is None and stream.first is None:
        stream.error = "no_output"
    usage = stream.usage or {}
    start = stream.sent if stream.sent is not None else start
    return RequestRecord(
        start_s=start - t0,
        first_token_s=None if stream.first is None else stream.first - t0,
        end_s=end - t0,
        input_tokens=int(usage.get("prompt_tokens") or request.input_tokens),
        output_tokens=int(usage.get("completion_tokens") or stream.chunks),
        itl_s=tuple(stream.itl),
        error=stream.error,
    )


async def _consume(client: httpx.AsyncClient, url: str, body: bytes, stream: _Stream) -> None:
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    async with client.stream(
        "POST", url, content=body, headers=headers, extensions={"trace": stream.trace}
    ) as response:
        if response.status_code != 200:
            await response.aread()
            stream.error = f"http_{response.status_code}"
            return
        pending = b""
        async for data in response.aiter_raw():
            now = time.perf_counter()
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if len(line) > 1:  # skip the blank line ending each event
                    stream.feed(line.rstrip(b"\r"), now)
            if stream.error:
                return


async def run_load_async(
    base_url: str,
    model: str,
    requests: Sequence[LoadRequest],
    *,
    arrival_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    warmup: int = 0,
    chat: bool = False,
    request_timeout_s: float = 600.0,
    extra_body: Mapping[str, Any] | None = None,
    deadline_s: float | None = None,
) -> LoadResult:
    """Send ``requests`` (the first ``warmup`` of them as warmup) and time them.

    ``arrival_s`` None means closed loop at ``concurrency`` (required then); otherwise requests
    are released at those offsets (re-based to the first measured one), at most ``concurrency``
    in flight when given. The whole run raises ``TimeoutError`` after ``deadline_s``.
    """
    return await asyncio.wait_for(
        _run(
            base_url,
            model,
            requests,
            arrival_s,
            concurrency,
            warmup,
            chat,
            request_timeout_s,
            extra_body,
        ),
        deadline_s,
    )


async def _run(
    base_url: str,
    model: str,
    requests: Sequence[LoadRequest],
    arrival_s: Sequence[float] | None,
    concurrency: int | None,
    warmup: int,
    chat: bool,
    request_timeout_s: float,
    extra_body: Mapping[str, Any] | None,
) -> LoadResult:
    if arrival_s is None and not concurrency:
        raise ValueError("closed-loop load needs a concurrency")
    url = base_url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
    bodies = [request_body(model, r, chat, extra_body) for r in requests]
    cap = concurrency or None
    limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
    timeout = httpx.Timeout(request_timeout_s, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        warm_idx = list(range(min(warmup, len(requests))))
        t_warm = time.perf_counter()
        warm = await _closed_loop(
            client,
            url,
            bodies,
            requests,
            warm_idx,
            min(len(warm_idx), cap or len(warm_idx)) or 1,
            t_warm,
            request_timeout_s,
        )
        measured = list(range(len(warm_idx), len(requests)))
        t0 = time.perf_counter()
        if arrival_s is None:
            records = await _closed_loop(
                client, url, bodies, requests, measured, cap or 1, t0, request_timeout_s
            )
        else:
            offsets = [arrival_s[i] - arrival_s[measured[0]] for i in measured] if measured else []
            records = await _open_loop(
                client, url, bodies, requests, measured, offsets, cap, t0, request_timeout_s
            )
        duration = time.perf_counter() - t0
    return LoadResult(records=records, duration_s=duration, warmup_records=warm)


def run_load(
    base_url: str, model: str, requests: Sequence[LoadRequest], **options: Any
) -> LoadResult:
    """Blocking wrapper of :func:`run_load_async` (its own event loop)."""
    return asyncio.run(run_load_async(base_url, model, requests, **options))


async def _closed_loop(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[bytes],
    requests: Sequence[LoadRequest],
    indices: list[int],
    workers: int,
    t0: float,
    timeout_s: float,
) -> list[RequestRecord]:
    records: list[RequestRecord | None] = [None] * len(indices)
    queue = iter(range(len(indices)))

    async def worker() -> None:
        for slot in queue:
            i = indices[slot]
            records[slot] = await send_one(client, url, bodies[i], requests[i], t0, timeout_s)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(indices)))))
    return [r for r in records if r is not None]


async def _open_loop(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[bytes],
    requests: Sequence[LoadRequest],
    indices: list[int],
    offsets: Sequence[float],
    cap: int | None,
    t0: float,
    timeout_s: float,
) -> list[RequestRecord]:
    gate = asyncio.Semaphore(cap) if cap else None

    async def fire(i: int) -> RequestRecord:
        if gate is None:
            return await send_one(client, url, bodies[i], requests[i], t0, timeout_s)
        async with gate:
            return await send_one(client, url, bodies[i], requests[i], t0, timeout_s)

    tasks = []
    for i, offset in zip(indices, offsets, strict=True):
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(i)))
    return list(await asyncio.gather(*tasks))
