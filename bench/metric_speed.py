"""Speed and agreement of the competition scorer against the `rouge==1.0.1` package.

    .venv/bin/python bench/metric_speed.py            # 1,500 pairs
    .venv/bin/python bench/metric_speed.py --quick    # 300 pairs

Generates Korean prediction/reference pairs shaped like dialogue summaries (15-60 words, several
sentences, `#PersonN#` tokens), scores them with `rouge==1.0.1` and with `dialsum.metrics` in
whitespace mode (same numbers expected), then times morpheme mode cold (analyzer load included)
and warm. Prints a short table, then JSON as the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import time

SUBJECTS = ["#Person1#은", "#Person2#는", "#Person1#이", "#Person2#가", "#Person3#은", "두 사람은", "그들은"]
OBJECTS = [
    "#Person2#에게",
    "#Person1#에게",
    "친구에게",
    "의사에게",
    "점원에게",
    "#PhoneNumber#로",
    "#Address#에서",
]
NOUNS = [
    "새",
    "집을",
    "회의를",
    "여행을",
    "휴가",
    "계획을",
    "저녁을",
    "영화를",
    "책을",
    "가방을",
    "표를",
    "방을",
    "일자리를",
    "면접",
    "날씨",
    "기차를",
    "버스를",
    "선물을",
    "커피를",
    "수업을",
    "숙제를",
    "문제를",
    "가격을",
    "카드로",
    "현금으로",
    "다음",
    "주에",
    "내일",
    "오늘",
    "주말에",
    "아침에",
    "저녁에",
    "공항에서",
    "식당에서",
]
VERBS = [
    "예약한다",
    "설명한다",
    "제안한다",
    "묻는다",
    "말한다",
    "동의한다",
    "거절한다",
    "추천한다",
    "도와준다",
    "찾고",
    "있다",
    "원한다",
    "결정한다",
    "확인한다",
    "걱정한다",
    "약속한다",
    "사기로",
    "했다",
    "알려준다",
]


def make_reference(rng: random.Random) -> str:
    target = rng.randint(15, 60)
    sentences, words = [], 0
    while words < target:
        body = [rng.choice(SUBJECTS)]
        body += [rng.choice(OBJECTS + NOUNS) for _ in range(rng.randint(2, 8))]
        body.append(rng.choice(VERBS))
        sentences.append(" ".join(body) + ".")
        words += len(body)
    return " ".join(sentences)


def make_prediction(rng: random.Random, reference: str) -> str:
    out = []
    for word in reference.split():
        roll = rng.random()
        if roll < 0.12:
            out.append(rng.choice(NOUNS + VERBS))
        elif roll < 0.22:
            continue
        else:
            out.append(word)
            if roll > 0.95:
                out.append(rng.choice(NOUNS))
    return " ".join(out)


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [make_reference(rng) for _ in range(n)]
    return [make_prediction(rng, r) for r in refs], refs


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 pairs instead of 1,500")
    parser.add_argument("--pairs", type=int, default=None, help="number of pairs (overrides --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per scorer (best kept)")
    args = parser.parse_args()
    n = args.pairs or (300 if args.quick else 1500)
    preds, refs = make_pairs(n)

    from rouge import Rouge

    from dialsum import metrics

    oracle_s, ours_s = float("inf"), float("inf")
    for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
        oracle, seconds = timed(Rouge().get_scores, preds, refs, True)
        oracle_s = min(oracle_s, seconds)
        ours_s = min(ours_s, timed(metrics.score, preds, [[r] for r in refs], "whitespace")[1])
    per_pair = Rouge().get_scores(preds, refs)
    ours = metrics.score(preds, [[r] for r in refs], "whitespace")
    keys = (("rouge-1", 0), ("rouge-2", 1), ("rouge-l", 2))
    diff_avg = max(
        abs(oracle[k]["f"] - getattr(ours, a))
        for (k, _), a in zip(keys, ("rouge1", "rouge2", "rougeL"), strict=True)
    )
    diff_pair = max(
        abs(p[k]["f"] - row[i]) for p, row in zip(per_pair, ours.per_dialogue, strict=True) for k, i in keys
    )

    refs_multi = [[r] for r in refs]
    morph, cold_s = timed(metrics.score, preds, refs_multi, "morpheme")
    metrics.clear_morpheme_cache()
    _, warm_s = timed(metrics.score, preds, refs_multi, "morpheme")
    _, cached_s = timed(metrics.score, preds, refs_multi, "morpheme")

    words = sum(len(r.split()) for r in refs) / n
    result = {
        "pairs": n,
        "repeats": args.repeats,
        "mean_reference_words": round(words, 1),
        "rouge_1_0_1_seconds": round(oracle_s, 4),
        "whitespace_seconds": round(ours_s, 4),
        "speedup": round(oracle_s / ours_s, 1),
        "max_abs_diff": max(diff_avg, diff_pair),
        "max_abs_diff_average": diff_avg,
        "max_abs_diff_per_pair": diff_pair,
        "morpheme_seconds": {
            "cold": round(cold_s, 4),
            "warm": round(warm_s, 4),
            "cached": round(cached_s, 4),
        },
        "whitespace_final": round(ours.final, 4),
        "morpheme_final": round(morph.final, 4),
    }
    print(f"{'scorer':<34} {'seconds':>9}")
    print(f"{'rouge==1.0.1 get_scores(avg=True)':<34} {oracle_s:>9.3f}")
    print(f"{'dialsum whitespace':<34} {ours_s:>9.3f}   x{result['speedup']} faster")
    print(f"{'dialsum morpheme, cold':<34} {cold_s:>9.3f}   (analyzer load included)")
    print(f"{'dialsum morpheme, warm':<34} {warm_s:>9.3f}")
    print(f"{'dialsum morpheme, cached texts':<34} {cached_s:>9.3f}")
    print(f"pairs {n}, mean reference words {words:.1f}, max abs diff {result['max_abs_diff']:.3g}")
    print(f"final: whitespace {ours.final:.2f}, morpheme {morph.final:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
