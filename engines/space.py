"""User overrides of an engine's search space, checked against the engine's own options.

A study spec can narrow or widen any bound, replace a choice list, or pin an option to one
value; an option the engine does not have is an error that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engines.base import Param
from engines.errors import SpecError

_RANGE_KEYS = {"low", "high", "step", "log"}


def apply_overrides(space: list[Param], overrides: Mapping[str, Any], where: str) -> list[Param]:
    """Return ``space`` with ``overrides`` applied; ``where`` prefixes error messages."""
    by_name = {p.name: p for p in space}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise SpecError(
            f"{where}.{unknown[0]}: not an option of this engine; options: {', '.join(by_name)}"
        )
    return [
        _override(p, overrides[p.name], f"{where}.{p.name}") if p.name in overrides else p
        for p in space
    ]


def _override(param: Param, value: Any, where: str) -> Param:
    if not isinstance(value, Mapping):
        value = {"value": value}
    keys = set(value)
    if "value" in keys:
        if keys != {"value"}:
            raise SpecError(f"{where}: 'value' pins the option and takes no other key")
        return replace(param, kind="categorical", choices=(value["value"],), default=value["value"])
    if "choices" in keys:
        choices = value["choices"]
        if keys != {"choices"} or not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}: 'choices' must be a non-empty list and stand alone")
        return replace(param, kind="categorical", choices=tuple(choices))
    if param.kind == "categorical":
        raise SpecError(
            f"{where}: categorical option takes 'choices' or 'value', got {sorted(keys)}"
        )
    bad = keys - _RANGE_KEYS
    if bad:
        raise SpecError(
            f"{where}: unknown key {sorted(bad)[0]!r}; use low/high/step/log, choices or value"
        )
    merged = replace(param, **{k: value[k] for k in keys})
    if merged.low is None or merged.high is None or merged.low > merged.high:
        raise SpecError(f"{where}: low ({merged.low}) must not exceed high ({merged.high})")
    if merged.log and merged.low <= 0:
        raise SpecError(f"{where}: log scale needs low > 0, got {merged.low}")
    return merged


def space_defaults(space: list[Param]) -> dict[str, Any]:
    """The engine defaults that the (possibly overridden) space still allows.

    An option whose default was overridden out of range is left out, so the sampler picks it.
    """
    chosen: dict[str, Any] = {}
    for param in space:
        if not param.applies(chosen):
            continue
        value = param.default
        if param.kind == "categorical":
            if value in param.choices:
                chosen[param.name] = value
            elif len(param.choices) == 1:
                chosen[param.name] = param.choices[0]
        elif value is not None and param.low <= value <= param.high:  # type: ignore[operator]
            chosen[param.name] = value
    return chosen


def pinned_overrides(space: list[Param], keep: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides that pin every option of ``space`` to its default except the ``keep`` ones
    (given as overrides themselves): a narrow study over a few options, the rest as shipped."""
    out: dict[str, Any] = {p.name: {"value": p.default} for p in space if p.name not in keep}
    out.update(keep)
    return out
