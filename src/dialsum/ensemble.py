"""Minimum-Bayes-risk ensembles of finished runs: for each dialogue, the candidate summary that agrees most
with the others, in the competition's own score.

    dialsum ensemble runs/kobart_baseline/<time> runs/solar_10.7b_qlora/<time> --out runs/ensembles/a
    dialsum ensemble RUN_DIR... --out DIR --candidates 4 --weighted --tuned
    python bench/ensemble_speed.py

Each run brings its candidates for every dev and test dialogue: its own summary (`--candidates 1`, read
from the run's `dev_predictions.csv` and `submission.csv`, or with `--tuned` from its tuned outputs) or
its `--candidates K` best beams (generated again). The pick for a dialogue is the candidate with the
highest expected `final` ROUGE (morphemes, as the leaderboard tokenizes) against all the candidates,
each weighted by its run's dev score with `--weighted` (else equally). Ties go to the earlier run and the better beam.
Written to `--out`: `submission.csv` (test order), `submission_sources.csv` and `dev_predictions.csv`
(which run and beam each pick came from), and `ensemble.json` (the ensemble's dev score beside each
member's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dialsum import config, data, generation, paths, prompt
from dialsum.csvio import atomic_write_json, atomic_write_rows, read_json
from dialsum.errors import DialsumError
from dialsum.metrics import morpheme_texts, pairwise, score
from dialsum.pause import pause


@dataclass
class Member:
    """One run's candidates, best first, for each dev and test dialogue."""

    run_dir: Path
    name: str
    dev_score: float  # its best candidates' dev score (morpheme final), the weight with --weighted
    dev: list[list[str]] = field(default_factory=list)
    test: list[list[str]] = field(default_factory=list)


@dataclass
class Pick:
    text: str
    member: int
    rank: int  # the candidate's place in its run's list (0: the run's own best)


def mbr(candidates: list[list[str]], weights: list[float]) -> Pick:
    """The candidate with the highest expected score against all candidates (itself included), each taken
    as a possible reference with its run's weight (one list per member). With equal weights this ranks as
    the mean against the others does; with dev-score weights a stronger run's candidate counts for more."""
    flat = [(text, m, r) for m, texts in enumerate(candidates) for r, text in enumerate(texts)]
    if len(flat) == 1:
        return Pick(*flat[0])
    matrix = pairwise([t for t, _, _ in flat])
    evidence = [weights[m] for _, m, _ in flat]
    best, best_utility = 0, float("-inf")
    for i, row in enumerate(matrix):
        utility = sum(w * s for w, s in zip(evidence, row, strict=True))
        if utility > best_utility + 1e-9:
            best, best_utility = i, utility
    return Pick(*flat[best])


def pick_all(members: list[Member], split: str, weights: list[float]) -> list[Pick]:
    rows = len(getattr(members[0], split))
    morpheme_texts(t for m in members for cands in getattr(m, split) for t in cands)  # one batched analysis
    return [mbr([getattr(m, split)[i] for m in members], weights) for i in range(rows)]


# ---------------------------------------------------------------- members


def load_member(run_dir: Path, k: int, tuned: bool) -> Member:
    """A finished run's candidates: its own outputs for k = 1, else its k best beams generated again."""
    for name in ("config.yaml", "metrics.json", "dev_predictions.csv", "submission.csv"):
        if not (run_dir / name).is_file():
            raise DialsumError(f"{run_dir}: not a finished run ({name} is missing); train it to the end first")
    if tuned and not (run_dir / "tune" / "best.yaml").is_file():
        raise DialsumError(f"{run_dir}: --tuned, but the run has no tune/best.yaml; run dialsum tune on it first")
    metrics = read_json(run_dir / "metrics.json", "train the run again")
    member = Member(run_dir, str(metrics.get("experiment") or run_dir.name), 0.0)
    if k == 1:
        dev_file = run_dir / "tune" / "dev_predictions.csv" if tuned else run_dir / "dev_predictions.csv"
        test_file = run_dir / "submission_tuned.csv" if tuned else run_dir / "submission.csv"
        member.dev = [[s] for s in _summaries(dev_file)]
        member.test = [[s] for s in _summaries(test_file)]
        return member
    return _generated(member, k, tuned)


def _summaries(path: Path) -> list[str]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame["summary"])


def _generated(member: Member, k: int, tuned: bool) -> Member:
    from dialsum.recipe import load_run_model, quiet_libraries
    from dialsum.tune import with_generation

    run_dir = member.run_dir
    cfg = config.load(run_dir / "config.yaml")
    if tuned:
        cfg = with_generation(cfg, run_dir / "tune" / "best.yaml")
    quiet_libraries()
    tokenizer, model, info = load_run_model(run_dir, cfg)
    encoder = prompt.make_encoder(tokenizer, info["family"], cfg)
    strip = generation.decoder_tokens_to_strip(tokenizer)
    dev = data.read_split(Path(cfg.data.dir) / cfg.data.dev_file, with_summary=True)
    if cfg.data.max_eval_samples:
        dev = dev.head(cfg.data.max_eval_samples)
    test = data.read_split(Path(cfg.data.dir) / cfg.data.test_file, with_summary=False)
    for split, frame in (("dev", dev), ("test", test)):
        inputs = encoder.inputs(list(frame["dialogue"]))
        setattr(member, split, generation.generate_candidates(model, tokenizer, inputs, cfg.generation, strip, k))
    return member


def _check_aligned(members: list[Member], dev_names: list[list[str]], test_names: list[list[str]]) -> None:
    """Every member must hold the same dev and test dialogues, in the same order."""
    for names, split in ((dev_names, "dev"), (test_names, "test")):
        for member, own in zip(members[1:], names[1:], strict=True):
            if own != names[0]:
                raise DialsumError(f"{member.run_dir}: its {split} rows differ from those of {members[0].run_dir} "
                                   f"({len(own)} against {len(names[0])} dialogues, or another order); ensemble "
                                   "runs scored on the same data")


# ---------------------------------------------------------------- the command


@dataclass
class EnsembleOptions:
    runs: list[Path]
    out: Path
    candidates: int = 1
    weighted: bool = False
    tuned: bool = False


def ensemble_runs(opts: EnsembleOptions) -> dict[str, Any]:
    if len(opts.runs) < 2:
        raise DialsumError("ensemble: give at least two run directories")
    if len(set(map(str, opts.runs))) < len(opts.runs):
        raise DialsumError("ensemble: a run directory is given twice; each run counts once")
    if opts.candidates < 1:
        raise DialsumError(f"--candidates {opts.candidates}: must be at least 1")
    out = paths.check_folder(opts.out, "--out")
    if (out / "submission.csv").exists():
        raise DialsumError(f"--out {out}: already holds an ensemble's submission.csv; choose another folder")
    members = [load_member(Path(r), opts.candidates, opts.tuned) for r in opts.runs]
    names = [m.name for m in members]
    for m in members:  # two runs of one experiment are told apart by their directories
        if names.count(m.name) > 1:
            m.name = f"{m.name} ({m.run_dir})"
    references = pd.read_csv(members[0].run_dir / "dev_predictions.csv", dtype=str, keep_default_na=False)
    test_names = [list(pd.read_csv(m.run_dir / "submission.csv", dtype=str)["fname"]) for m in members]
    dev_names = [list(pd.read_csv(m.run_dir / "dev_predictions.csv", dtype=str)["fname"]) for m in members]
    _check_aligned(members, dev_names, test_names)
    refs = [[r] for r in references["reference"]]
    for m in members:  # each member's dev score from its own best candidates, on the same rows and references
        m.dev_score = score([c[0] for c in m.dev], refs, "morpheme").final
    weights = [max(m.dev_score, 1e-6) for m in members] if opts.weighted else [1.0] * len(members)
    dev_picks, test_picks = pick_all(members, "dev", weights), pick_all(members, "test", weights)
    ensemble_score = score([p.text for p in dev_picks], refs, "morpheme").final
    pause("ensemble")  # the chaos benchmark's kill point (dialsum.pause)
    return _write(opts, members, dev_picks, test_picks, dev_names[0], test_names[0], references, ensemble_score)


def _write(opts: EnsembleOptions, members: list[Member], dev_picks: list[Pick], test_picks: list[Pick],
           dev_names: list[str], test_names: list[str], references: pd.DataFrame, ensemble_score: float) -> dict:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    generation.write_submission(out / "submission.csv", test_names, [p.text for p in test_picks])
    atomic_write_rows(out / "submission_sources.csv", ["fname", "run", "candidate"],
                      ((f, members[p.member].name, p.rank) for f, p in zip(test_names, test_picks, strict=True)))
    atomic_write_rows(out / "dev_predictions.csv", ["fname", "summary", "reference", "run", "candidate"],
                      ((f, p.text, r, members[p.member].name, p.rank)
                       for f, p, r in zip(dev_names, dev_picks, references["reference"], strict=True)))
    result = {
        "dev_final": ensemble_score, "candidates": opts.candidates, "weighted": opts.weighted, "tuned": opts.tuned,
        "members": [{"name": m.name, "run_dir": str(m.run_dir), "dev_final": m.dev_score,
                     "dev_picks": sum(p.member == i for p in dev_picks),
                     "test_picks": sum(p.member == i for p in test_picks)} for i, m in enumerate(members)],
    }
    atomic_write_json(out / "ensemble.json", result)
    return result
