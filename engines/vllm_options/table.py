"""One vLLM release's option table, loaded from the shipped data, and the checks made with it.

Every name servetune writes for ``vllm serve`` (searched options, a spec's pinned values,
``options.vllm_args``, baselines, exports) goes through :meth:`OptionTable.flag`, so a misspelt
or unknown option is one line naming it, the closest real name and the release, before any
server starts (vLLM itself would exit with ``unrecognized arguments`` after seconds of imports).
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from engines.errors import SpecError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
DEFAULT_VERSION = "0.26.0"  # the release servetune's measurements were made with
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def shipped_versions() -> list[str]:
    """Releases with a table in this package, oldest first."""
    return sorted((p.stem for p in HERE.glob("*.json")), key=_version_key)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def target_version(requested: str | None) -> str:
    """The release to check against: the one a spec names, else the installed vLLM's (when a
    table ships for it), else :data:`DEFAULT_VERSION`."""
    if requested is not None:
        if str(requested) not in shipped_versions():
            raise SpecError(
                f"engines.vllm.version: no option table for vLLM {requested}; shipped: "
                f"{', '.join(shipped_versions())} (make one: python -m "
                "engines.vllm_options.make_table SRC --version X)"
            )
        return str(requested)
    from engines.vllm_options.parser import installed_version

    installed = installed_version()
    if installed in shipped_versions():
        return installed  # type: ignore[return-value]
    if installed:
        log.warning(
            "vLLM %s is installed but no table ships for it; checking against %s",
            installed,
            DEFAULT_VERSION,
        )
    return DEFAULT_VERSION


@dataclass(frozen=True)
class OptionTable:
    """``vllm serve``'s flags in one release: ``options`` maps ``--flag`` to its entry."""

    version: str
    options: dict[str, dict[str, Any]]

    @property
    def path(self) -> str:
        return f"engines/vllm_options/{self.version}.json"

    def has(self, name: str) -> bool:
        return _dashed(name) in self.options

    def flag(self, name: str, where: str) -> dict[str, Any]:
        """The entry of ``name`` (``max_num_seqs``, ``max-num-seqs`` or ``no-async-scheduling``),
        or a SpecError naming the closest real option and this release."""
        dashed = _dashed(name)
        entry = self.options.get(dashed)
        if entry is None and dashed.startswith("--no-"):
            entry = self.options.get("--" + dashed[5:])
            if entry is not None and not entry.get("no_form"):
                raise SpecError(
                    f"{where}: vLLM {self.version} has no {dashed} form "
                    f"({'--' + dashed[5:]} is a plain switch)"
                )
        if entry is None:
            raise SpecError(
                f"{where}: {name!r} is not an option of vLLM {self.version}{self.suggest(name)}"
            )
        return entry

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(_dashed(name), list(self.options), n=1, cutoff=0.6)
        return f"; did you mean {close[0][2:]!r}?" if close else ""

    def default(self, name: str) -> Any:
        return self.options[_dashed(name)].get("default")

    def check_value(self, name: str, value: Any, where: str) -> None:
        """``value`` is one the flag takes: in its choices, of its type (None where nullable)."""
        entry = self.flag(name, where)
        _check(entry, value, f"{where}: {value!r} for {_dashed(name)} (vLLM {self.version})")

    def check_nested(self, option: str, values: dict[str, Any], where: str) -> None:
        """Keys (and values) of a JSON option such as ``--speculative-config``."""
        fields = self.flag(option, where).get("fields") or {}
        for key, value in values.items():
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SpecError(
                    f"{where}: {key!r} is not a key of {_dashed(option)} in vLLM "
                    f"{self.version}{hint}"
                )
            _check(fields[key], value, f"{where}: {value!r} for {_dashed(option)} {key}")


def _check(entry: dict[str, Any], value: Any, what: str) -> None:
    if value is None:
        return  # servetune writes nothing for None: vLLM's own default applies
    allowed = entry.get("choices") or entry.get("values")
    if allowed and value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{what} is not one of its values{hint}")
    kinds = _TYPES.get(entry.get("type", ""))
    if kinds and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        raise SpecError(f"{what} is not of type {entry['type']}")


def _dashed(name: str) -> str:
    return "--" + name.lstrip("-").replace("_", "-")


@lru_cache(maxsize=8)
def load_table(version: str | None = None) -> OptionTable:
    """The table of ``version`` (see :func:`target_version` for None)."""
    chosen = target_version(version)
    data = json.loads((HERE / f"{chosen}.json").read_text())
    return OptionTable(version=chosen, options=data["options"])
