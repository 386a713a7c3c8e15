"""Request datasets a workload can name: servetune's JSON lines, and ShareGPT.

* JSON lines: one object per line with ``output_tokens`` and ``input_tokens`` or ``prompt``;
* ShareGPT: a JSON array, or JSON lines, of ``{"conversations": [{"from": "human", "value": ...},
  {"from": "gpt", "value": ...}, ...]}``: the first human turn is the prompt, the reply after it
  the output (lengths estimated at 4 characters a token where no tokenizer is at hand).

Both are read and checked here, strictly, when a spec is loaded: a line that is not an object,
a count that is not a whole number in range, ``Infinity``/``NaN``, text that is not UTF-8 are
one line naming the file, the line and the field, before any study exists.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from engines.errors import SpecError

MAX_TOKENS = 10_000_000  # longer than any model's context: a count past it is a typo
CHARS_PER_TOKEN = 4


def is_sharegpt(path: str | Path) -> bool:
    """Whether a dataset file is ShareGPT-style (records with a ``conversations`` list)."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"conversations"' in head


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"workload.dataset: cannot read {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"workload.dataset: {path} line {line}: not UTF-8 text") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number a dataset may hold")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError included
        raise SpecError(f"workload.dataset: {where}: not valid JSON ({exc})") from None


def _count(row: dict[str, Any], field: str, where: str) -> int:
    value = row[field]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise SpecError(
            f"workload.dataset: {where}: {field} must be a whole number from 1 to {MAX_TOKENS:,} "
            f"(got {value!r})"
        )
    return value


@lru_cache(maxsize=16)
def read_lines(path: Path) -> tuple[tuple[int, int, str | None], ...]:
    """(input tokens, output tokens, prompt or None) per request of a JSON-lines dataset."""
    rows = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        row = _json(line, where)
        if not isinstance(row, dict):
            raise SpecError(
                f"workload.dataset: {where}: expected a JSON object, got {type(row).__name__}"
            )
        prompt = row.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise SpecError(f"workload.dataset: {where}: prompt must be text")
        if "output_tokens" not in row or ("input_tokens" not in row and prompt is None):
            raise SpecError(
                f"workload.dataset: {where}: needs output_tokens and input_tokens or prompt"
            )
        n_in = (
            _count(row, "input_tokens", where)
            if "input_tokens" in row
            else max(1, len(prompt) // CHARS_PER_TOKEN)  # type: ignore[arg-type]
        )
        rows.append((n_in, _count(row, "output_tokens", where), prompt))
    if not rows:
        raise SpecError(f"workload.dataset: {path} has no requests")
    return tuple(rows)


@lru_cache(maxsize=16)
def read_sharegpt(path: str | Path) -> tuple[tuple[str, str], ...]:
    """(first human turn, the gpt turn after it) of every conversation that has both."""
    path = Path(path)
    text = _text(path)
    if text.lstrip().startswith("["):
        rows = _json(text, str(path))
    else:
        rows = [
            _json(line, f"{path} line {n}")
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    if not isinstance(rows, list):
        raise SpecError(f"workload.dataset: {path}: expected a list of conversations")
    pairs: list[tuple[str, str]] = []
    for row in rows:
        turns = row.get("conversations") if isinstance(row, dict) else None
        if not isinstance(turns, list):
            continue
        for first, second in zip(turns, turns[1:], strict=False):
            if not (isinstance(first, dict) and isinstance(second, dict)):
                break
            if first.get("from") in ("human", "user") and second.get("from") in (
                "gpt",
                "assistant",
            ):
                question, answer = first.get("value"), second.get("value")
                if isinstance(question, str) and isinstance(answer, str) and question and answer:
                    pairs.append((question, answer))
                break
    if not pairs:
        raise SpecError(f"workload.dataset: {path} has no human/gpt conversation pairs")
    return tuple(pairs)


def dataset_requests(path: str | Path) -> tuple[tuple[int, int, str | None], ...]:
    """(input tokens, output tokens, prompt) per request, whichever form the file is in."""
    path = Path(path)
    if is_sharegpt(path):
        return tuple(
            (max(1, len(q) // CHARS_PER_TOKEN), max(1, len(a) // CHARS_PER_TOKEN), q)
            for q, a in read_sharegpt(path)
        )
    return read_lines(path)
