"""Search quality on the Tim family (the project's test fonts: never trained, tuned or early-stopped on).

Builds a library from TimGM6mb + sf_GMbank (or --db an existing one) and reports hit@1 and hit@10 for three query
sets, scoring each patch by its best note and by its note nearest --pitch (default 60):
- title: each distinct preset title (trailing indices stripped) -> the patches with that title;
- category: each GM family -> the patches of that family;
- plain: the plain-language queries below, each relevant to a set of GM programs. They were written from the GM
  instrument names and families before any result was looked at, and are not changed after.

    python benchmarks/search_quality.py [--db lib.sqlite] [--model DIR] [--pitch 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

TIM_FONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/sf_GMbank.sf2")

# query -> GM programs (0-based) that answer it
PLAIN_QUERIES: dict[str, tuple[int, ...]] = {
    "piano": (0, 1, 2, 3), "grand piano": (0, 1), "electric piano": (4, 5), "honky tonk piano": (3,),
    "harpsichord": (6,), "clavinet": (7,), "celesta": (8,), "glockenspiel": (9,), "music box": (10,),
    "vibraphone": (11,), "marimba": (12,), "xylophone": (13,), "tubular bells": (14,), "church organ": (19,),
    "rock organ": (18,), "accordion": (21,), "harmonica": (22,), "nylon guitar": (24,), "steel string guitar": (25,),
    "electric guitar": (26, 27, 28), "distorted guitar": (29, 30), "acoustic bass": (32,),
    "electric bass": (33, 34), "slap bass": (36, 37), "synth bass": (38, 39), "fretless bass": (35,),
    "violin": (40,), "viola": (41,), "cello": (42,), "contrabass": (43,), "string ensemble": (48, 49),
    "pizzicato strings": (45,), "harp": (46,), "timpani": (47,), "choir": (52, 53), "voice": (52, 53, 54),
    "orchestra hit": (55,), "trumpet": (56,), "trombone": (57,), "tuba": (58,), "french horn": (60,),
    "brass section": (61, 62, 63), "saxophone": (64, 65, 66, 67), "oboe": (68,), "clarinet": (71,), "flute": (73,),
    "pan flute": (75,), "synth lead": tuple(range(80, 88)), "warm pad": (89,), "synth pad": tuple(range(88, 96)),
    "sitar": (104,), "banjo": (105,), "steel drums": (114,), "bagpipe": (109,), "kalimba": (108,),
}


def hits(search, queries: dict[str, set[int]], pitch) -> dict[str, float]:
    from timbreclip.library.search import Query

    h1 = h10 = 0
    for text, relevant in queries.items():
        top = [h["patch_id"] for h in search.search(Query(text=text), top=10, pitch=pitch)]
        h1 += bool(top and top[0] in relevant)
        h10 += bool(set(top) & relevant)
    n = max(1, len(queries))
    return {"n": len(queries), "hit@1": round(100 * h1 / n, 1), "hit@10": round(100 * h10 / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--model")
    parser.add_argument("--pitch", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from timbreclip.defaults import load_torch_model
    from timbreclip.library.db import Library
    from timbreclip.library.search import PatchSearch
    from timbreclip.library.sources import add_sources
    from timbreclip.training.evaluation import strip_index

    model = load_torch_model(args.model)
    tmp = tempfile.TemporaryDirectory()
    db = args.db or str(Path(tmp.name) / "tim.sqlite")
    library = Library(db)
    if not library.note_count():
        add_sources(library, [f for f in TIM_FONTS if Path(f).is_file()], model, model.fingerprint(),
                    model.config.frontend, progress=sys.stderr.isatty())
    search = PatchSearch(library, model, model.fingerprint())
    patches = search.index.patches
    by_title: dict[str, set[int]] = {}
    by_family: dict[str, set[int]] = {}
    for p in patches:
        by_title.setdefault(strip_index(p["title"]), set()).add(p["id"])
        by_family.setdefault(p["category"], set()).add(p["id"])
    plain = {q: {p["id"] for p in patches if p["program"] in programs} for q, programs in PLAIN_QUERIES.items()}
    plain = {q: ids for q, ids in plain.items() if ids}
    rows = []
    for name, queries in (("title", by_title), ("category", by_family), ("plain language", plain)):
        for label, pitch in (("best note", None), (f"note nearest {args.pitch:g}", args.pitch)):
            rows.append({"queries": name, "scoring": label, **hits(search, queries, pitch)})
    random_row = {"patches": len(patches), "random hit@1 (plain)": round(100 * float(np.mean(
        [len(v) / len(patches) for v in plain.values()])), 2)}
    library.close()
    if args.json:
        print(json.dumps({"rows": rows, "library": random_row}, indent=2))
        return
    print(f"Tim family: {len(patches)} patches; random hit@1 on the plain queries "
          f"{random_row['random hit@1 (plain)']}%")
    print("| queries | n | scoring | hit@1 | hit@10 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['queries']} | {r['n']} | {r['scoring']} | {r['hit@1']} | {r['hit@10']} |")


if __name__ == "__main__":
    main()
