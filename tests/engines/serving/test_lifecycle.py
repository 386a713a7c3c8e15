"""Server lifecycle: start, health, failure reasons, teardown on every path, and reuse."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from engines.errors import EngineError
from engines.serving.lifecycle import (
    ServerProcess,
    classify_failure,
    free_port,
    group_alive,
    port_is_free,
)
from engines.serving.pool import ServerPool, restart_key
from engines.standin import STANDIN_COMMAND as STANDIN


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (("--fault", "crash_at_start"), "crash"),
        (("--fault", "oom_exit"), "oom"),
        (("--ttft-ms", "not-a-number"), "invalid_argument"),
    ],
)
def test_startup_failures_are_classified(standin_factory, assert_no_leftovers, flags, reason):
    server = standin_factory(*flags, start=False)
    with pytest.raises(EngineError) as info:
        server.start()
    assert info.value.reason == reason
    assert info.value.log_path == str(server.log_path) and server.log_path.exists()
    assert_no_leftovers(server)


def test_hang_before_health_times_out(standin_factory, assert_no_leftovers):
    server = standin_factory("--fault", "hang_before_health", start=False, startup_timeout_s=1.0)
    began = time.perf_counter()
    with pytest.raises(EngineError) as info:
        server.start()
    assert info.value.reason == "startup_timeout"
    assert time.perf_counter() - began < 5
    assert_no_leftovers(server)


def test_port_clash(standin_factory, standin_env):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = standin_factory(start=False, port=port)
        with pytest.raises(EngineError) as info:
            server.start()
        assert info.value.reason == "port_clash"
        # The server's own message when it loses the race for the port is read the same way.
        out = subprocess.run(
            [*STANDIN, "--port", str(port)],
            capture_output=True,
            text=True,
            env=standin_env,
            timeout=20,
        )
    assert out.returncode == 1
    assert classify_failure(out.returncode, out.stdout + out.stderr)[0] == "port_clash"
    assert port_is_free(port)


def test_slow_start_is_waited_for(standin_factory, assert_no_leftovers):
    server = standin_factory("--fault", "slow_start", "--startup-s", "0.8")
    assert server.start_s is not None and server.start_s >= 0.8
    server.stop()
    assert_no_leftovers(server)


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(
    standin_factory, assert_no_leftovers
):
    server = standin_factory("--ignore-sigterm", "--spawn-child", stop_grace_s=0.5)
    time.sleep(0.3)  # let the child start
    began = time.perf_counter()
    server.stop()
    assert time.perf_counter() - began < 5
    assert_no_leftovers(server)
    server.stop()  # twice is fine


def test_argv_must_be_a_list(tmp_path):
    with pytest.raises(TypeError):
        ServerProcess("vllm serve model", 8000, tmp_path / "x.log")  # type: ignore[arg-type]


def test_sigterm_to_the_tuner_stops_its_server(tmp_path, standin_env):
    """The chained SIGTERM handler takes the server down before the tuner process dies."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(os.getcwd())!r})
        from engines.serving.lifecycle import ServerProcess, free_port
        port = free_port()
        server = ServerProcess({STANDIN!r} + ["--port", str(port)], port,
                               Path({str(tmp_path / "s.log")!r}), stop_grace_s=2).start()
        print(server.pgid, port, flush=True)
        time.sleep(60)
    """)
    tuner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=standin_env
    )
    try:
        pgid, port = map(int, tuner.stdout.readline().split())  # type: ignore[union-attr]
        assert group_alive(pgid)
        tuner.send_signal(signal.SIGTERM)
        assert tuner.wait(timeout=10) == -signal.SIGTERM  # then died by the signal, as before
    finally:
        tuner.kill()
    deadline = time.monotonic() + 3
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
        # This process is a child subreaper (set by the lifecycle module), so the server,
        # orphaned when the tuner died, is ours to reap.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-pgid, os.WNOHANG)
    assert not group_alive(pgid)
    assert port_is_free(port)


@pytest.mark.parametrize(
    ("code", "log", "reason"),
    [
        (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        (1, "ValueError: No available memory for the cache blocks. Try increasing", "oom"),
        (
            1,
            "ValueError: To serve at least one request with the model's max seq len (131072), "
            "(16.0 GiB KV cache is needed, which is larger than the available KV cache memory "
            "(9.5 GiB).",
            "oom",
        ),
        (2, "vllm serve: error: argument --dtype: invalid choice: 'x'", "invalid_argument"),
        (2, "vllm: error: unrecognized arguments: --swap-space 4", "invalid_argument"),
        (
            1,
            "Traceback...\nValueError: max_num_batched_tokens (512) is smaller than max_model_len",
            "invalid_argument",
        ),
        (
            1,
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig",
            "invalid_argument",
        ),
        (1, "OSError: [Errno 98] Address already in use", "port_clash"),
        (1, "RuntimeError: Engine core initialization failed.", "crash"),
        (-9, "", "crash"),
        (None, "INFO Loading weights", "startup_timeout"),
    ],
)
def test_classify_failure(code, log, reason):
    assert classify_failure(code, log)[0] == reason


# ---------------------------------------------------------------- reuse
class _FakeServer:
    def __init__(self) -> None:
        self.stopped = False

    def alive(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        self.stopped = True

    port = 0


def test_pool_reuses_only_while_restart_options_match():
    pool = ServerPool()
    free = {"max_num_seqs"}  # as if Param("max_num_seqs", restart=False)
    key = lambda config: restart_key(config, free, engine="x")  # noqa: E731
    first, reused = pool.acquire(key({"dtype": "bf16", "max_num_seqs": 8}), _FakeServer)
    assert not reused
    again, reused = pool.acquire(key({"dtype": "bf16", "max_num_seqs": 64}), _FakeServer)
    assert reused and again is first
    other, reused = pool.acquire(key({"dtype": "fp16", "max_num_seqs": 64}), _FakeServer)
    assert not reused and first.stopped and pool.starts == 2
    other.stop()  # died: the next acquire starts afresh
    _, reused = pool.acquire(key({"dtype": "fp16", "max_num_seqs": 64}), _FakeServer)
    assert not reused
    pool.close()
    assert pool.current is None


def test_free_port_is_bindable():
    assert port_is_free(free_port())
