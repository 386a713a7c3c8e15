"""Task accuracy on a user's JSONL eval set, through the served completions API.

One JSON object a line (blank lines skipped)::

    {"prompt": "Q: 2+2=? A:", "expected": "4", "match": "contains"}
    {"prompt": "Capital of France:", "choices": [" Paris", " Rome"], "answer": 0}

``match`` is ``exact`` (the completion's first line, stripped, equals ``expected``), ``contains``
(``expected`` is a substring), ``regex`` (``re.search(expected, completion)``) or ``choice``
(default when ``choices`` is given): each choice is scored by the sum of its tokens' logprobs
after the prompt (echo), and the item is right when the best one is ``answer`` (an index or the
choice text). This is lm-evaluation-harness's ``acc`` (not length-normalised): start choices with
the space that separates them from the prompt, and do not end prompts with one. Generation is
greedy, ``max_tokens`` (default 32) per item; ``ignore_case`` applies to the three text matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engines.accuracy._client import CompletionsClient
from engines.errors import SpecError

SAMPLE = "sample.jsonl"


class EvalItem(BaseModel):
    """One eval item; see the module docstring for the fields."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    match: Literal["exact", "contains", "regex", "choice"] | None = None
    expected: str | None = None
    choices: list[str] | None = None
    answer: int | str | None = None
    max_tokens: int = Field(default=32, ge=1, le=4096)
    stop: list[str] | str | None = None
    ignore_case: bool = False
    id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> EvalItem:
        if self.match is None:
            self.match = "choice" if self.choices is not None else "exact"
        if self.match == "choice":
            if not self.choices or len(self.choices) < 2:
                raise ValueError("match 'choice' needs 'choices' with at least two entries")
            if self.answer is None:
                raise ValueError("match 'choice' needs 'answer' (an index or one of the choices)")
            self.correct_index  # noqa: B018  (validates the answer)
        elif self.expected is None:
            raise ValueError(f"match {self.match!r} needs 'expected'")
        elif self.match == "regex":
            try:
                re.compile(self.expected)
            except re.error as exc:
                raise ValueError(f"'expected' is not a valid regex ({exc})") from None
        return self

    @property
    def correct_index(self) -> int:
        choices = self.choices or []
        if isinstance(self.answer, int):
            if not 0 <= self.answer < len(choices):
                raise ValueError(
                    f"answer {self.answer} is not an index of the {len(choices)} choices"
                )
            return self.answer
        if self.answer not in choices:
            raise ValueError(f"answer {self.answer!r} is not one of the choices")
        return choices.index(self.answer)


@dataclass(frozen=True)
class EvalResult:
    """Share of ``items`` answered right (``correct``), of ``total`` in the file."""

    accuracy: float
    correct: int
    items: int
    total: int


def load_evalset(path: str | Path | None = None) -> list[EvalItem]:
    """Read and validate an eval set (the bundled sample by default).

    A malformed line raises a one-line :class:`SpecError` naming the file and line.
    """
    if path is None:
        source = f"engines/data/evals/{SAMPLE}"
        text = resources.files("engines").joinpath("data", "evals", SAMPLE).read_text("utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"evalset {source}: cannot read ({exc.strerror})") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            items.append(_parse_line(line, source, number))
    if not items:
        raise SpecError(f"evalset {source}: no items")
    return items


def _parse_line(line: str, source: str, number: int) -> EvalItem:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SpecError(f"evalset {source} line {number}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"evalset {source} line {number}: expected an object, got {type(data).__name__}"
        )
    try:
        return EvalItem.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        where = f"{field}: " if field else ""
        raise SpecError(f"evalset {source} line {number}: {where}{message}") from None


def text_matches(item: EvalItem, completion: str) -> bool:
    """Whether a generated ``completion`` answers ``item`` (exact, contains or regex)."""
    expected = item.expected or ""
    flags = re.IGNORECASE if item.ignore_case else 0
    if item.match == "regex":
        return re.search(expected, completion, flags) is not None
    if item.ignore_case:
        completion, expected = completion.lower(), expected.lower()
    if item.match == "contains":
        return expected in completion
    first_line = completion.strip().split("\n", 1)[0].strip()
    return first_line == expected.strip()


def best_choice(scores: Sequence[float]) -> int:
    """Index of the highest-scoring choice (the first on ties)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def choice_score(client: CompletionsClient, prompt: str, choice: str) -> float:
    """Sum of the logprobs of ``choice``'s tokens after ``prompt`` (tokens at or past its end)."""
    positions = client.score(prompt + choice)
    return sum(p.logprob or 0.0 for p in positions if p.offset >= len(prompt))


def answer(client: CompletionsClient, item: EvalItem) -> bool:
    """Ask the server one item; True when it answers right."""
    if item.match == "choice":
        scores = [choice_score(client, item.prompt, c) for c in item.choices or []]
        return best_choice(scores) == item.correct_index
    params: dict[str, Any] = {}
    if item.stop is not None:
        params["stop"] = item.stop
    return text_matches(item, client.generate(item.prompt, item.max_tokens, **params))


def run_evalset(
    client: CompletionsClient, items: Sequence[EvalItem], budget_tokens: int
) -> EvalResult:
    """Answer items in file order until ``budget_tokens`` tokens are spent (at least one)."""
    correct = done = 0
    start = client.cost.tokens
    for item in items:
        if done and client.cost.tokens - start >= budget_tokens:
            break
        correct += answer(client, item)
        done += 1
    return EvalResult(correct / done, correct, done, len(items))
