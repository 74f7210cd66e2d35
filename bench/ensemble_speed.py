"""Speed of the MBR ensemble: five runs x four candidates x 500 dialogues within one minute.

    .venv/bin/python bench/ensemble_speed.py            # 500 dialogues (the target's size)
    .venv/bin/python bench/ensemble_speed.py --quick    # 100 dialogues

Candidates are the sample's training summaries with words dropped, swapped and replaced (20 per
dialogue: five runs x four beams, near-duplicates as real beams are). Two ways to score the pairs,
side by side on the same first dialogues: dialsum's (`metrics.pairwise`: each distinct text analysed
into morphemes in one batch and prepared once, pairs scored from the prepared sets) against scoring
each pair as a fresh prediction/reference (`metrics.rouge_pair`, which prepares both texts every
time). Then the full ensemble (`ensemble.pick_all`) at the requested size, cold (empty morpheme cache)
against the one-minute target. Prints a table, then JSON as the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dialsum import metrics  # noqa: E402
from dialsum.ensemble import Member, pick_all  # noqa: E402

RUNS, BEAMS, TARGET_SECONDS = 5, 4, 60.0


def variant(summary: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = summary.split()
    for _ in range(rng.randrange(0, 4)):
        i = rng.randrange(len(words))
        action = rng.random()
        if action < 0.4 and len(words) > 3:
            del words[i]
        elif action < 0.7:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        else:
            words[i] = rng.choice(vocabulary)
    return " ".join(words)


def members(dialogues: int, seed: int) -> list[Member]:
    summaries = list(pd.read_csv(ROOT / "data" / "sample" / "train.csv", dtype=str)["summary"])
    rng = random.Random(seed)
    vocabulary = [w for s in summaries[:300] for w in s.split()]
    chosen = rng.sample(summaries, dialogues)
    out = []
    for run in range(RUNS):
        cands = [[variant(s, rng, vocabulary) for _ in range(BEAMS)] for s in chosen]
        out.append(Member(Path(f"run{run}"), f"run{run}", 0.0, dev=cands, test=cands))
    return out


def time_pairs(groups: list[list[str]]) -> tuple[float, float, list[list[list[float]]]]:
    started = time.perf_counter()
    ours = [metrics.pairwise(g) for g in groups]
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    plain = [[[sum(metrics.rouge_pair(a, b, "morpheme")) / 3 * 100 for b in g] for a in g] for g in groups]
    plain_seconds = time.perf_counter() - started
    same = all(abs(x - y) < 1e-9 for g1, g2 in zip(ours, plain, strict=True) for r1, r2 in zip(g1, g2, strict=True)
               for x, y in zip(r1, r2, strict=True))
    return ours_seconds, plain_seconds, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dialogues = 100 if args.quick else 500
    runs = members(dialogues, args.seed)
    metrics.clear_morpheme_cache()
    started = time.perf_counter()
    picks = pick_all(runs, "dev", [1.0] * RUNS)
    full_seconds = time.perf_counter() - started
    compared = 20 if args.quick else 40
    groups = [[t for m in runs for t in m.dev[i]] for i in range(compared)]
    ours, plain, same = time_pairs(groups)
    rows = [("full ensemble, cold cache", f"{dialogues} x {RUNS * BEAMS}", f"{full_seconds:.1f} s"),
            ("pairs, dialsum (prepared once)", f"{compared} dialogues", f"{ours:.2f} s"),
            ("pairs, each scored afresh", f"{compared} dialogues", f"{plain:.2f} s")]
    for row in rows:
        print(f"{row[0]:<34} {row[1]:>16} {row[2]:>10}")
    print(f"speedup of the pair scoring: {plain / ours:.1f}x; identical scores: {same}; "
          f"target {TARGET_SECONDS:.0f} s for 500 dialogues: {'met' if full_seconds <= TARGET_SECONDS else 'MISSED'}")
    print(json.dumps({"dialogues": dialogues, "candidates_per_dialogue": RUNS * BEAMS, "seconds": round(full_seconds, 2),
                      "target_seconds": TARGET_SECONDS, "met": full_seconds <= TARGET_SECONDS,
                      "pair_speedup": round(plain / ours, 2), "identical": same, "picks": len(picks)}))


if __name__ == "__main__":
    main()
