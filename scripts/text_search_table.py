"""Text search on a labelled collection: the top k files per query and how many have the expected name prefix.

    .venv/bin/simsearch index ../shared/data/sonic-pi --out /tmp/sp --label-regex '^([a-z]+)_'
    .venv/bin/python scripts/text_search_table.py /tmp/sp                  # words and sound, fused
    .venv/bin/python scripts/text_search_table.py /tmp/sp --fields sound   # acoustic only

Each query is QUERY=PREFIX[|PREFIX...]; a hit counts when the file name starts with one of the prefixes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from simsearch import Index

QUERIES = ["drum=drum_", "bass=bass_", "tabla=tabla_|loop_tabla", "robot voice=glitch_robot|mehackit_robot",
           "guitar=guit_", "bell=perc_bell|ambi_glass|elec_bell", "cymbal=drum_cymbal|drum_splash",
           "vinyl scratch=vinyl_"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--fields", help="text fields, comma-separated: words, sound (default both, fused)")
    ap.add_argument("--query", action="append", help="QUERY=PREFIX[|PREFIX...] (repeat; default: Sonic Pi set)")
    args = ap.parse_args()
    index = Index.open(args.index)
    print(f"index: {args.index} ({index.info['encoder']['name']}), fields: {args.fields or 'words,sound'}\n")
    print(f"| query | expected prefix | top {args.k} | hits |")
    print("|---|---|---|---:|")
    total = 0
    for spec in args.query or QUERIES:
        query, _, prefixes = spec.partition("=")
        names = [Path(r["path"]).stem for r in index.search(text=query, k=args.k, fields=args.fields)]
        hits = sum(any(n.startswith(p) for p in prefixes.split("|")) for n in names)
        print(f"| {query} | {prefixes.replace('|', ' or ')} | {', '.join(names)} | {hits}/{args.k} |")
        total += hits
    print(f"\ntotal: {total}/{args.k * len(args.query or QUERIES)}")


if __name__ == "__main__":
    main()
