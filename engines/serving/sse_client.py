"""A lean HTTP/1.1 client for streamed completions: one asyncio Protocol per connection.

Why not httpx: its per-chunk path (httpx → httpcore → h11, several coroutines and generators per
SSE event) costs ~50-70 µs of CPU per streamed token. At 256 concurrent streams a server sends
~12k chunks/s, more than one core can take that way; the client fell behind, read several events
per socket read (stamped at once: ITL p50 0.03 ms), noticed ends late and refilled late, so the
server ran far under the planned concurrency (seen on an H100: -21% throughput against
``vllm bench serve``). Here a socket read is parsed in place by ``data_received``: chunked
framing, SSE lines and one JSON decode per event, a few µs each.

It speaks just what the OpenAI-compatible servers we start speak (vLLM, ``trtllm-serve``, the
stand-in): plain ``http://``, keep-alive, responses framed by ``Content-Length``, chunked
encoding or connection close. Stdlib only, so that :mod:`engines.serving.loadgen_worker` can run
it in worker processes without importing the ``engines`` package.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: (start, first, end, prompt_tokens, completion_tokens, text_chunks, itl, error); times are
#: ``time.perf_counter()`` values, prompt/completion tokens None when the server sent no usage.
RawRecord = tuple[
    float, "float | None", float, "int | None", "int | None", int, tuple, "str | None"
]

_decode = json.JSONDecoder().decode
_HEAD, _CHUNK_SIZE, _CHUNK_DATA, _LENGTH, _UNTIL_CLOSE, _TRAILER, _DONE = range(7)


@dataclass
class Stream:
    """What one response stream delivered so far (SSE events, timed on arrival)."""

    first: float | None = None
    last: float | None = None
    itl: list[float] = field(default_factory=list)
    chunks: int = 0
    usage: Mapping[str, Any] | None = None
    done: bool = False
    error: str | None = None

    def feed(self, line: bytes, now: float) -> None:
        """One SSE line (without its newline)."""
        if not line.startswith(b"data:"):
            return  # comments, event names, blank keep-alives
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        data = _decode(payload.decode())
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


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` streams one response into a :class:`Stream`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self._waiter: asyncio.Future[None] | None = None
        self._stream = Stream()
        self._buf = b""
        self._sse = b""
        self._state = _DONE
        self._left = 0
        self._status = 0
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.reusable = True

    def send(self, request: bytes, stream: Stream) -> asyncio.Future[None]:
        """Write ``request``; the future ends when the response has been read (or failed)."""
        self._stream, self._buf, self._sse = stream, b"", b""
        self._state, self._status, self._keep_alive = _HEAD, 0, True
        self._waiter = asyncio.get_running_loop().create_future()
        self.reusable = False
        if self.transport is None:
            # the server closed the new connection before the request went out (an overloaded
            # accept queue does this): a connect error, not a crash of the load generator
            self._state = _DONE
            stream.error = "connect"
            self._waiter.set_result(None)
            return self._waiter
        self.transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            self._parse(self._buf + data if self._buf else data, now)
        except (ValueError, UnicodeDecodeError):  # bad framing or a chunk that is not JSON
            self._fail("bad_chunk")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport, self.reusable = None, False
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state != _DONE:
            self._fail("stream_cut")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _parse(self, buf: bytes, now: float) -> None:
        pos, end = 0, len(buf)
        while pos < end and self._state != _DONE:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._left, end - pos)
                self._body(buf[pos : pos + take], now)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state, self._left = _CHUNK_SIZE, -2  # the CRLF after the data
                continue
            if state in (_LENGTH, _UNTIL_CLOSE):
                take = end - pos if state == _UNTIL_CLOSE else min(self._left, end - pos)
                self._body(buf[pos : pos + take], now)
                pos += take
                self._left -= take
                if state == _LENGTH and self._left == 0:
                    self._finish()
                continue
            eol = buf.find(b"\r\n\r\n" if state == _HEAD else b"\r\n", pos)
            if eol < 0:
                break
            line, pos = buf[pos:eol], eol + (4 if state == _HEAD else 2)
            if state == _HEAD:
                self._head(line)
            elif state == _TRAILER:
                if not line:
                    self._finish()
            elif self._left == -2:  # the CRLF closing the previous chunk
                self._left = 0
            else:
                size = int(line.split(b";", 1)[0], 16)
                self._state, self._left = (_CHUNK_DATA, size) if size else (_TRAILER, 0)
        self._buf = buf[pos:] if pos < end and self._state != _DONE else b""

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._status = int(lines[0].split(None, 2)[1])
        length, chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                self._keep_alive = value != b"close"
        if chunked:
            self._state, self._left = _CHUNK_SIZE, 0
        elif length is not None:
            self._state, self._left = _LENGTH, length
            if length == 0:
                self._finish()
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False

    def _body(self, data: bytes, now: float) -> None:
        if self._status != 200:
            return  # an error body: its status is the error
        lines = (self._sse + data).split(b"\n")
        self._sse = lines.pop()
        stream = self._stream
        for line in lines:
            if len(line) > 1:  # skip the blank line ending each event
                stream.feed(line.rstrip(b"\r"), now)
        if stream.error:
            self._fail(stream.error)

    def _finish(self) -> None:
        self._state = _DONE
        if self._status != 200:
            self._stream.error = f"http_{self._status}"
        self.reusable = self._keep_alive and self.transport is not None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: str) -> None:
        self._state = _DONE
        if self._stream.error is None:
            self._stream.error = error
        self.reusable = False
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Pool:
    """Idle keep-alive connections to one server; a request takes one or opens one."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load generator speaks plain http:// only, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._idle: list[Connection] = []

    def request_bytes(self, path: str, body: bytes) -> bytes:
        """The whole HTTP request for ``body`` (built once, before timing starts)."""
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes, timeout_s: float) -> RawRecord:
        """Send one request and time its stream; failures come back as the record's error."""
        stream = Stream()
        began = start = time.perf_counter()
        conn: Connection | None = None
        try:
            conn = await asyncio.wait_for(self._acquire(), timeout_s)
            start = time.perf_counter()
            await asyncio.wait_for(conn.send(request, stream), timeout_s - (start - began))
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            stream.error = "timeout"
            if conn is not None:
                conn.close()  # mid-response: never reused
        except OSError:
            stream.error = "connect"
        except asyncio.CancelledError:  # the run was stopped: drop the response mid-stream
            if conn is not None:
                conn.close()
            raise
        if conn is not None:
            self._release(conn)
        end = stream.last if stream.last is not None else time.perf_counter()
        if stream.error is None and not stream.done:
            stream.error = "stream_cut"
        if stream.error is None and stream.first is None:
            stream.error = "no_output"
        usage = stream.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return (
            start,
            stream.first,
            end,
            int(prompt) if prompt else None,
            int(completion) if completion else None,
            stream.chunks,
            tuple(stream.itl),
            stream.error,
        )

    async def _acquire(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Connection, self.host, self.port)
        return conn

    def _release(self, conn: Connection) -> None:
        if conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
