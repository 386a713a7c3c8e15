"""An extraction workload whose answers copy the prompt: order records in, fields out.

    python bench/real/extraction_dataset.py OUT.jsonl [--rows 20000] [--output-tokens 128]

Issue 27's third workload needs outputs that reuse prompt text, so that n-gram speculative
decoding (prompt lookup) meets drafts a real model accepts. Each row is one order record (a
customer, an address, 3-12 item lines, a note made of sentences of the bundled public-domain
corpus) followed by the instruction to copy the customer, the address and every item line
exactly, and the answer's first words (``Customer:``), so a greedy model continues by copying.
Every record is different (names, numbers and notes are drawn per row from a seeded generator),
so a run's prompts do not share cache blocks beyond the instruction; rows are servetune's JSON
lines (``prompt`` and ``output_tokens``: engines/datasets.py), lengths counted by the server's
tokenizer when the workload is planned. The same seed gives the same file on any machine, so the
file is made where it is used (about 1 KB a row) instead of being committed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engines.accuracy.perplexity import read_corpus  # noqa: E402

FIRST = "Maria John Aisha Wei Olga Pedro Fatima Lars Priya Kenji Amara Tomas Ines Dmitri Leila"
LAST = "Keller Okafor Novak Tanaka Silva Haddad Lindqvist Moreau Kowalski Reyes Brennan Sato"
STREETS = "Oak Maple Cedar Harbor Mill River Station Church Garden Lake Hill Market Orchard"
CITIES = (
    "Springfield, OR 97477|Portland, ME 04101|Madison, WI 53703|Austin, TX 78701|"
    "Boulder, CO 80302|Ithaca, NY 14850|Asheville, NC 28801|Eugene, OR 97401"
)
ITEMS = (
    "stainless steel water bottle|wool hiking socks|cast iron skillet|ceramic coffee mug|"
    "LED desk lamp|bamboo cutting board|canvas tote bag|wireless keyboard|linen napkin set|"
    "glass storage jar|cotton bath towel|folding camp chair|paperback notebook|brass door hook"
)
INSTRUCTION = (
    "Task: copy the customer's name, the shipping address and every item line exactly as "
    "they appear in the record above, one per line, without changing any word or number."
)


def sentences() -> list[str]:
    """The bundled corpus cut into sentences (the notes are made of them)."""
    text = " ".join(read_corpus(None).split())
    return [s.strip() for s in re.split(r"(?<=[.;:])\s+", text) if len(s.split()) >= 6]


def record(rng: np.random.Generator, notes: list[str], number: int) -> str:
    """One order record and the extraction instruction, ending where the answer begins."""
    first, last = rng.choice(FIRST.split()), rng.choice(LAST.split())
    street = f"{rng.integers(10, 9999)} {rng.choice(STREETS.split())} Street"
    city = rng.choice(CITIES.split("|"))
    lines = [
        f"Order record {number:06d}",
        f"Customer: {first} {last}",
        f"Email: {first.lower()}.{last.lower()}{rng.integers(1, 99)}@example.com",
        f"Shipping address: {street}, {city}",
        "Items:",
    ]
    for _ in range(int(rng.integers(3, 13))):
        sku = f"{rng.choice(list('ABCDEFGHKMNPRSTW'))}{rng.choice(list('ABCDEFGHKMNPRSTW'))}"
        lines.append(
            f"- {rng.integers(1, 6)} x {rng.choice(ITEMS.split('|'))} "
            f"(SKU {sku}-{rng.integers(1000, 9999)}) at ${rng.integers(3, 250)}.{rng.integers(0, 99):02d}"
        )
    picked = rng.choice(len(notes), size=int(rng.integers(2, 6)), replace=False)
    lines.append("Notes: " + " ".join(notes[int(i)] for i in picked))
    return "\n".join([*lines, "", INSTRUCTION, "Answer:", "Customer:"])


def write(path: Path, rows: int, output_tokens: int, seed: int = 0) -> int:
    """Write ``rows`` records to ``path`` as JSON lines; returns the bytes written."""
    rng = np.random.default_rng(seed)
    notes = sentences()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(rows):
            prompt = record(rng, notes, number)
            handle.write(json.dumps({"prompt": prompt, "output_tokens": output_tokens}) + "\n")
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the JSON lines file to write")
    parser.add_argument("--rows", type=int, default=20_000, help="records (default 20,000)")
    parser.add_argument("--output-tokens", type=int, default=128, help="tokens per answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.output_tokens < 1:
        parser.error("--rows and --output-tokens must be >= 1")
    size = write(args.out, args.rows, args.output_tokens, args.seed)
    print(f"wrote {args.out}: {args.rows} records, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
