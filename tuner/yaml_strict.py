"""YAML as a spec author means it: UTF-8 text, and no key given twice.

PyYAML keeps the last of two equal keys without a word (``name: a`` then ``name: b`` names the
study ``b``), and a file that is not text fails deep in a decoder. Both become one line naming
the file, the line or byte, and what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engines.errors import SpecError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key seen before in the same mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(f"line {line}: duplicate key {key!r} (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a SpecError naming the file for anything unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); a spec "
            "is a YAML file"
        ) from None
    if "\x00" in text:
        raise SpecError(f"{path}: binary data (a NUL byte), not a YAML spec")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
