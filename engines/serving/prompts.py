"""Prompts of exact token counts, and prompts read from ShareGPT files.

With the served model's ``tokenizer.json`` (the ``tokenizers`` library), a prompt is a run of
words that are each one token after a space, checked by encoding the whole text and trimmed or
padded until the count is exact. The count excludes the special tokens the server adds (BOS), as
``vllm bench serve`` does for its random dataset, so the server's ``prompt_tokens`` equals the
planned length. Without a tokenizer, prompts are common English words, one per planned token: an
approximation that :attr:`PromptMaker.exact` and :attr:`PromptMaker.label` say out loud.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import SpecError

log = logging.getLogger(__name__)

_FALLBACK_TEXT = (
    "the of and to in is for on that with as it at by from this be are was or an have not but "
    "all can one more will new time about also its year out up other which their into only over "
    "most some such they than then these first after may two any many were like make well way "
    "part both each back good long just city name work high life small world house place "
    "state group water point level found power light right music river field south north"
)
_FALLBACK_WORDS = tuple(_FALLBACK_TEXT.split())
_MAX_FIX_ROUNDS = 20


def load_tokenizer(model_path: str | Path | None) -> Any | None:
    """The ``tokenizers`` tokenizer in ``model_path/tokenizer.json``, or None without one."""
    if model_path is None:
        return None
    path = Path(model_path) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        log.warning("tokenizers is not installed: prompt lengths will be approximate")
        return None
    return Tokenizer.from_file(str(path))


class PromptMaker:
    """Builds prompts of planned token counts, exactly with a tokenizer, else approximately."""

    def __init__(self, tokenizer: Any | None = None, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.rng = np.random.default_rng(seed)
        self.exact = tokenizer is not None
        self.label = "tokenizer.json" if self.exact else "words (approximate: no tokenizer.json)"
        self.special_tokens = self._count_with_specials("") if self.exact else 0
        self._words = self._single_token_words() if self.exact else _FALLBACK_WORDS

    def count(self, text: str) -> int:
        """Tokens the server will see for ``text`` (special tokens included)."""
        if self.tokenizer is None:
            return len(text.split())
        return self._count_with_specials(text)

    def make(self, lengths: Sequence[int], shared_prefix: int = 0) -> list[str]:
        """One prompt per planned length; the first ``shared_prefix`` tokens are common to all."""
        prefix = self._text(shared_prefix) if shared_prefix > 0 else ""
        return [self._text(int(n), prefix) for n in lengths]

    def _text(self, tokens: int, prefix: str = "") -> str:
        target = max(1, tokens - self.special_tokens)
        words = list(self.rng.choice(self._words, size=max(0, target - self._raw(prefix))))
        if self.tokenizer is None:
            return " ".join([prefix, *words]) if prefix else " ".join(words)
        for _ in range(_MAX_FIX_ROUNDS):
            text = " ".join([prefix, *words]) if prefix else " ".join(words)
            diff = self._raw(text) - target
            if diff == 0:
                return text
            if diff > 0:
                words = words[: max(0, len(words) - diff)]
            else:
                words += list(self.rng.choice(self._words, size=-diff))
        log.warning("could not hit %d prompt tokens exactly (got %d)", target, target + diff)
        return text

    def _raw(self, text: str) -> int:
        if not text:
            return 0
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _count_with_specials(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)  # type: ignore[union-attr]

    def _single_token_words(self, want: int = 2000, scan: int = 30000) -> tuple[str, ...]:
        """Vocabulary entries that encode back to their own single token after a space.

        The round trip matters: a word the tokenizer maps to ``<unk>`` (or to another id) is one
        token too, but prompts made of it are all the same token, which a prefix cache serves
        for free and which would make every measurement a lie.
        """
        tok = self.tokenizer
        size = tok.get_vocab_size()  # type: ignore[union-attr]
        ids = np.random.default_rng(0).permutation(size)[:scan]
        words: dict[int, str] = {}
        for token_id in ids:
            word = tok.decode([int(token_id)]).strip()  # type: ignore[union-attr]
            if not (word.isascii() and word.isprintable() and word and " " not in word):
                continue
            if tok.encode(" " + word, add_special_tokens=False).ids == [int(token_id)]:  # type: ignore[union-attr]
                words[int(token_id)] = word
                if len(words) >= want:
                    break
        if len(words) < 100:
            raise SpecError(
                f"tokenizer: found only {len(words)} words that round-trip to distinct "
                "single tokens; cannot build prompts of exact, varied tokens"
            )
        return tuple(sorted(set(words.values())))
