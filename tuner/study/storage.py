"""Opening Optuna storages with errors users can act on, and URLs safe to write down."""

from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path

import optuna

from engines.errors import StudyError
from tuner.redaction import redact_url, remember, scrub, url_secrets

# The storage URL without its password (for manifests, logs and study attributes).
redact = redact_url


def sqlalchemy_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can load here: plain ``postgresql://`` (the documented
    form) means psycopg 3 to SQLAlchemy 2.1, while servetune's ``postgres`` extra installs
    psycopg2; without psycopg 3 the URL names psycopg2. ``postgres://`` (Heroku's spelling,
    which SQLAlchemy does not know) is read the same way."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            if plain == "postgres://" or driver == "psycopg2":
                return f"postgresql+{driver}://" + url.removeprefix(plain)
    return url


def _tune_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL journal + normal sync: a commit no longer waits for an fsync of the whole file.

    Optuna commits on every suggestion and attribute, so this is most of a sim trial's cost;
    WAL stays crash-safe (a power cut can lose the last commits, never corrupt the file) and
    lets readers (the dashboard, a notebook) open the study while it runs.
    """
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened before the listener lack the pragmas


# What a database says when another process created the same schema a moment earlier.
_SCHEMA_RACE = ("UNIQUE constraint failed", "already exists", "duplicate key", "database is locked")
_SCHEMA_ATTEMPTS = 8


def _rdb_storage(url: str, kwargs: dict) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried while another process is creating the same schema.

    Workers started together on a new database all try to create Optuna's tables and its
    alembic version row; all but one fail on a unique key or an existing type. Once the winner
    commits, a retry finds the schema and only checks it, so a short jittered retry is race-free.
    """
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:
            if attempt == _SCHEMA_ATTEMPTS - 1 or not any(s in str(exc) for s in _SCHEMA_RACE):
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str, heartbeat_s: int | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; SQLite parent folders are created, failures named.

    ``journal:<path>`` opens Optuna's JournalStorage on a file (for shared filesystems). Errors
    never carry the URL's password (:mod:`tuner.redaction`).
    """
    remember(url_secrets(url))
    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() and not path.is_file():
                raise StudyError(f"storage: {path} is not a file")
        kwargs = {}
        if heartbeat_s:
            kwargs = {"heartbeat_interval": heartbeat_s, "grace_period": heartbeat_s * 3}
        storage = _rdb_storage(sqlalchemy_url(url), kwargs)
        if url.startswith("sqlite:"):
            _tune_sqlite(storage)
        return storage
    except StudyError:
        raise
    except OSError as exc:
        raise StudyError(f"storage: cannot create {exc.filename}: {exc.strerror}") from None
    except Exception as exc:  # SQLAlchemy/driver errors are many; show the first line only
        raise _open_error(url, exc) from None


def storage_exists(url: str) -> bool:
    """Whether ``url`` names a storage that already holds Optuna's tables. Creates nothing (no
    folder, no SQLite file, no schema), so reading a study that is not there (``show``,
    ``export``) leaves no trace, also when its name walks out with ``../``."""
    remember(url_secrets(url))
    if url in ("sqlite://", "sqlite:///:memory:"):
        return False
    for prefix in ("journal:", "sqlite:///"):
        if url.startswith(prefix):
            if not Path(url.removeprefix(prefix).split("?", 1)[0]).is_file():
                return False
            if prefix == "journal:":
                return True
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(sqlalchemy_url(url))
        try:
            return sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - same one-line form as open_storage's errors
        raise _open_error(url, exc) from None


def _open_error(url: str, exc: Exception) -> StudyError:
    """One line: the redacted URL and the first line of the driver's message, scrubbed (a
    malformed URL's message may quote the URL, password and all)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return StudyError(f"storage: cannot open {redact(url)}: {scrub(first, [url])}")
