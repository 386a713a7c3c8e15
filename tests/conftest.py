"""Shared fixtures: stand-in OpenAI servers on 127.0.0.1, a tiny tokenizer, run contexts.

Fixtures here are generic so every test package can use them; add yours below, grouped by topic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.serving.lifecycle import ServerProcess, free_port, group_alive, port_is_free
from engines.standin import REPO_ROOT, STANDIN_COMMAND


def _standin_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _assert_no_leftovers(server: ServerProcess) -> None:
    assert server.pgid is not None
    assert not group_alive(server.pgid), f"process group {server.pgid} still has members"
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pgid, 0)
    assert port_is_free(server.port), f"port {server.port} still in use"


@pytest.fixture
def standin_env() -> dict[str, str]:
    """Environment in which ``python -m engines.standin.openai_server`` imports this checkout."""
    return _standin_env()


@pytest.fixture
def assert_no_leftovers() -> Callable[[ServerProcess], None]:
    """``check(server)``: nothing of the server's process group is left and its port is free."""
    return _assert_no_leftovers


@pytest.fixture
def live_children() -> Callable[[], set[int]]:
    """``live_children()``: pids of this process's children still running (zombies excluded),
    to show that something started no process it did not also end."""

    def found() -> set[int]:
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                pids.add(int(stat.parent.name))
        return pids

    return found


# ---------------------------------------------------------------- stand-in servers
def _factory(log_dir: Path) -> tuple[Callable[..., ServerProcess], list[ServerProcess]]:
    made: list[ServerProcess] = []

    def make(
        *flags: str, start: bool = True, port: int | None = None, **kwargs: Any
    ) -> ServerProcess:
        port = port or free_port()
        kwargs.setdefault("startup_timeout_s", 15.0)
        kwargs.setdefault("stop_grace_s", 3.0)
        server = ServerProcess(
            [*STANDIN_COMMAND, "--port", str(port), *flags],
            port,
            log_dir / f"standin-{port}.log",
            env=_standin_env(),
            **kwargs,
        )
        made.append(server)
        return server.start() if start else server

    return make, made


@pytest.fixture
def standin_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``make(*flags, start=True, **kwargs)``: a stand-in server (started unless start=False).

    Every server made is stopped at teardown, even when the test failed.
    """
    make, made = _factory(tmp_path)
    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running stand-in shared by a test module: TTFT 20 ms, ITL 5 ms, no concurrency limit."""
    make, made = _factory(tmp_path_factory.mktemp("standin"))
    yield make("--ttft-ms", "20", "--itl-ms", "5")
    for server in made:
        server.stop()


# ---------------------------------------------------------------- tokenizer and contexts
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a small byte-level BPE ``tokenizer.json`` (adds a BOS token)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from engines.serving.prompts import _FALLBACK_WORDS

    rng = __import__("random").Random(0)
    corpus = [" ".join(rng.choice(_FALLBACK_WORDS) for _ in range(40)) for _ in range(300)]
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=500,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    path = tmp_path_factory.mktemp("tiny-model")
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., Any]:
    """``make_ctx(workload=..., model_path=None, **options)``: a RunContext on an H100 with a
    Llama-3.1-8B shape, writing under ``tmp_path``."""
    from engines.base import RunContext
    from engines.specs import HardwareSpec, ModelSpec
    from engines.workload import WorkloadSpec

    def make(workload: Any = None, model_path: str | None = None, **options: Any) -> RunContext:
        model = ModelSpec.model_validate(
            {"name": "Llama-3.1-8B", **({"path": model_path} if model_path else {})}
        )
        spec = WorkloadSpec.model_validate(
            workload
            or {
                "input_tokens": 32,
                "output_tokens": 8,
                "num_requests": 8,
                "arrival": {"kind": "concurrency", "concurrency": 2},
            }
        )
        return RunContext(
            model=model,
            hardware=HardwareSpec(gpu="H100-SXM"),
            workload=spec,
            workdir=tmp_path / "runs",
            trial_number=0,
            timeout_s=60.0,
            options=options,
        )

    return make


@pytest.fixture(autouse=True)
def _close_pooled_servers() -> Iterator[None]:
    """Stop any server kept for reuse by ``engines.serving.measure`` when a test ends."""
    yield
    from engines.serving.measure import close_servers

    close_servers()


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server (throwaway cluster, free port) for the whole session.

    Skips with the reason when the binaries, the ``postgres`` user (as root) or psycopg2 are
    missing; stopped and deleted at the end.
    """
    from postgres import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return postgres_server.create_database(f"{name}_{uuid.uuid4().hex[:8]}")
