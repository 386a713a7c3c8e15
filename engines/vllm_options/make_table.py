"""Make the option table of one vLLM release from its own source, and check it against the
installed vLLM's parser where one is installed.

    python -m engines.vllm_options.make_table SRC --version 0.26.0
    python -m engines.vllm_options.make_table SRC --version 0.26.0 --check   # needs vLLM SRC's release installed

``SRC`` holds the ``vllm`` package (an unpacked wheel or a checkout). The table goes to
``engines/vllm_options/<version>.json`` unless ``--out`` says otherwise. ``--check`` compares
every flag's name, boolean form, choices, default and type with ``make_arg_parser``'s and
exits 1 on a difference (written to stderr, one line each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engines.vllm_options.walk import read_source

HERE = Path(__file__).parent
_COMPARED = ("boolean", "no_form", "choices", "default", "type")


def make_table(src: str | Path, version: str) -> dict[str, Any]:
    """The table written for one release: its options plus where they came from and what was
    approximated (entries whose default or type the source alone does not fix)."""
    options = read_source(src)
    return {
        "vllm_version": version,
        "source": "vllm/entrypoints/openai/cli_args.py (make_arg_parser, FrontendArgs), "
        "vllm/engine/arg_utils.py (EngineArgs.add_cli_args, AsyncEngineArgs.add_cli_args), "
        "vllm/config/*.py (field types and defaults), read with ast",
        "made_by": f"python -m engines.vllm_options.make_table SRC --version {version}",
        "approximated": {k: v["approximated"] for k, v in options.items() if "approximated" in v},
        "options": options,
    }


def compare(source: dict[str, dict], parser: dict[str, dict]) -> list[str]:
    """One line per difference between a table read from source and the live parser's."""
    lines = [f"{name}: only in the source table" for name in sorted(set(source) - set(parser))]
    lines += [f"{name}: only in the parser" for name in sorted(set(parser) - set(source))]
    for name in sorted(set(source) & set(parser)):
        for key in _COMPARED:
            ours, theirs = source[name].get(key), parser[name].get(key)
            if key == "choices" and ours is None and "values" in source[name]:
                continue
            if key == "default" and "factory" in source[name].get("approximated", ""):
                continue  # a nested config's defaults: the table says {} (its own defaults)
            if _norm(ours) != _norm(theirs):
                lines.append(f"{name}: {key} source {ours!r} parser {theirs!r}")
    return lines


def _norm(value: Any) -> Any:
    return sorted(map(str, value)) if isinstance(value, list) else value


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="make_table", description=__doc__.split("\n")[0])
    cli.add_argument("src", help="directory holding the release's vllm package")
    cli.add_argument("--version", required=True, help="the release the source is (0.26.0)")
    cli.add_argument("--out", help="where to write (default engines/vllm_options/VERSION.json)")
    cli.add_argument("--check", action="store_true", help="compare with the installed parser")
    args = cli.parse_args(argv)
    if not (Path(args.src) / "vllm" / "engine" / "arg_utils.py").is_file():
        print(f"make_table: {args.src} holds no vllm/engine/arg_utils.py", file=sys.stderr)
        return 2
    table = make_table(args.src, args.version)
    out = Path(args.out or HERE / f"{args.version}.json")
    out.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"{out}: {len(table['options'])} options, {len(table['approximated'])} approximated")
    if not args.check:
        return 0
    from engines.vllm_options.parser import installed_version, read_parser

    if installed_version() != args.version:
        print(f"make_table: --check needs vLLM {args.version}, found {installed_version()}")
        return 2
    differences = compare(table["options"], read_parser())
    for line in differences:
        print(line, file=sys.stderr)
    print(f"checked against the installed parser: {len(differences)} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
