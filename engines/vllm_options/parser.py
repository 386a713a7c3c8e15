"""Read the option table from an installed vLLM's real parser (``make_arg_parser``), in the same
form as :func:`engines.vllm_options.walk.read_source`, so the two can be compared.

Importing vLLM takes seconds and needs its dependencies (torch...), so this runs only where it
is installed: to check a table made from source, or to make one for the installed release.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_TYPE_NAMES = {int: "int", float: "float", str: "str"}


def installed_version() -> str | None:
    """The installed vLLM's version from its distribution metadata (no import), else None."""
    from importlib import metadata

    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return None


def read_parser() -> dict[str, dict[str, Any]]:
    """``{"--flag": entry}`` from the installed vLLM's ``vllm serve`` parser."""
    from vllm.entrypoints.cli.serve import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    _allow_no_gpu()
    parser = make_arg_parser(FlexibleArgumentParser())
    options = {}
    for action in parser._actions:  # noqa: SLF001  (argparse keeps no public list)
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or flags[0] in ("--help",):
            continue
        options[flags[0]] = _entry(action)
    return dict(sorted(options.items()))


def _allow_no_gpu() -> None:
    """Building the parser instantiates VllmConfig's default DeviceConfig, which fails where no
    accelerator is found ("Failed to infer device type"); the options do not depend on it, so
    name the CPU as the device for this read only."""
    from vllm.platforms import current_platform

    if not getattr(current_platform, "device_type", ""):
        current_platform.device_type = "cpu"


def _entry(action: argparse.Action) -> dict[str, Any]:
    boolean = isinstance(
        action,
        argparse.BooleanOptionalAction | argparse._StoreTrueAction | argparse._StoreFalseAction,  # noqa: SLF001
    )
    no_form = isinstance(action, argparse.BooleanOptionalAction)
    if action.nargs == "?" and action.const is True:  # --hf-token: bare flag True, or a value
        return {**_entry_base(action), "type": "bool|str", "boolean": True, "no_form": False}
    choices = list(action.choices) if action.choices is not None and not boolean else None
    if choices:  # optional choices: "None" (0.26.0) or None (0.33.0) added by vLLM
        choices = [c for c in choices if c not in ("None", None)]
    return {
        "type": "bool" if boolean else _type_name(action),
        "choices": sorted(choices, key=str) if choices else None,
        "default": _jsonable(action.default),
        "boolean": boolean,
        "no_form": no_form,
        "aliases": list(action.option_strings[1:]),
        "dest": action.dest,
    }


def _entry_base(action: argparse.Action) -> dict[str, Any]:
    return {
        "choices": None,
        "default": _jsonable(action.default),
        "aliases": list(action.option_strings[1:]),
        "dest": action.dest,
    }


def _type_name(action: argparse.Action) -> str:
    kind = action.type
    name = getattr(kind, "__qualname__", "") or ""
    if kind in _TYPE_NAMES:
        base = _TYPE_NAMES[kind]
    elif "optional_type" in name or "parse_type" in name:
        base = _closure_type(kind)
    elif "human_readable_int" in name:
        base = "int"
    elif kind is json.loads or "dict" in name or "dataclass" in name:
        base = "json"
    else:
        base = "str"
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):  # noqa: SLF001
        return f"list[{base}]"
    return base


def _closure_type(func: Any) -> str:
    """The type an ``optional_type(int)`` / ``parse_type(json.loads)`` wrapper converts to."""
    for cell in getattr(func, "__closure__", None) or ():
        inner = cell.cell_contents
        if inner in _TYPE_NAMES:
            return _TYPE_NAMES[inner]
        if inner is json.loads:
            return "json"
        if callable(inner) and getattr(inner, "__closure__", None):
            return _closure_type(inner)
        if callable(inner) and "human_readable_int" in getattr(inner, "__qualname__", ""):
            return "int"
        if callable(inner) and "dataclass" in getattr(inner, "__qualname__", ""):
            return "json"
    return "str"


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    try:
        json.dumps(value)
        return value
    except TypeError:
        return _jsonable(value.value) if hasattr(value, "value") else str(value)
