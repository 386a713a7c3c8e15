"""The load generator's HTTP client when a server slams the door: errors, never a crash."""

from __future__ import annotations

import asyncio
import socket
import threading

from engines.serving.sse_client import Pool


def _slamming_server() -> tuple[socket.socket, threading.Event]:
    """A real TCP server on 127.0.0.1 that accepts each connection and closes it at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


def test_a_connection_closed_before_the_request_is_written_is_a_connect_error():
    listener, stop = _slamming_server()
    port = listener.getsockname()[1]

    async def scenario():
        pool = Pool(f"http://127.0.0.1:{port}")
        conn = await pool._acquire()
        for _ in range(100):  # until the server's close has reached the client
            if conn.transport is None:
                break
            await asyncio.sleep(0.01)
        assert conn.transport is None
        from engines.serving.sse_client import Stream

        stream = Stream()
        await conn.send(pool.request_bytes("/v1/completions", b"{}"), stream)
        return stream.error

    try:
        assert asyncio.run(scenario()) == "connect"
    finally:
        stop.set()
        listener.close()


def test_many_requests_against_a_slamming_server_all_come_back_as_errors():
    listener, stop = _slamming_server()
    port = listener.getsockname()[1]

    async def scenario():
        pool = Pool(f"http://127.0.0.1:{port}")
        body = pool.request_bytes("/v1/completions", b"{}")
        records = await asyncio.gather(*(pool.send(body, 5.0) for _ in range(300)))
        pool.close()
        return records

    try:
        records = asyncio.run(scenario())
    finally:
        stop.set()
        listener.close()
    assert len(records) == 300
    assert {r[-1] for r in records} <= {"connect", "stream_cut"}
