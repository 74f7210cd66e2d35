"""Minimum-Bayes-risk ensembles of finished runs: for each dialogue, the candidate summary that agrees most
with the others, in the competition's own score.

    dialsum ensemble runs/kobart_baseline/<time> runs/solar_10.7b_qlora/<time> runs/t5/<time> --out runs/ensembles/a
    dialsum ensemble RUN_DIR RUN_DIR --out DIR --candidates 4 --weighted --tuned
    python bench/ensemble_speed.py

Each run brings its candidates for every dev and test dialogue: its own summary (`--candidates 1`, read
from the run's `dev_predictions.csv` and `submission.csv`, or with `--tuned` from its tuned outputs) or
its `--candidates K` best beams (generated again). The pick for a dialogue is the candidate with the
highest expected `final` ROUGE (morphemes, as the leaderboard tokenizes) against all the candidates,
each weighted by its run's dev score with `--weighted` (else equally). Ties go to the earlier run and the
better beam. A pick needs at least MIN_POOL candidates per dialogue: of two, each agrees with itself
fully and with the other equally, so the first run (or with weights the stronger one) always wins.
At most MAX_POOL: the pairwise table of a dialogue grows with the square of its candidates.

The ensemble's dev score is one no choice was made on. With `--weighted`, a dev row's pick is weighted by
the members' scores on the other half of the dev rows (cross-fitting: even and odd rows), and test by
scores on all of them. With `--tuned`, each member's tuned outputs were chosen on its search rows, so
the ensemble is scored on the rows that every member's tuning held out (`tune/dev_predictions.csv`).
Written to `--out`: `submission.csv` (test order), `submission_sources.csv` and `dev_predictions.csv`
(which run and beam each pick came from), and `ensemble.json` (the ensemble's dev score beside each
member's, on the same rows, and how the weights were measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from dialsum import config, generation, paths, prompt
from dialsum.csvio import read_table
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_rows
from dialsum.finished_run import FinishedRun, open_run, read_dev, read_test
from dialsum.metrics import morpheme_texts, pairwise, score
from dialsum.pause import pause
from dialsum.runfiles import ENSEMBLE, TUNE_RESULT, EnsembleMember, EnsembleResult

MIN_POOL = 3  # candidates per dialogue below which MBR can only echo the run order or the weights
MAX_POOL = 128  # candidates per dialogue: 16,384 pair scores, about 0.4 s a dialogue on one core
TABLE_BYTES = 32  # one pair score as the table holds it (a Python float and its pointer)
TIE = 1e-9  # utilities this close are a tie (float sums in another order): the earlier candidate keeps it
WEIGHT_FLOOR = 1e-6  # a member that scores 0 still weighs a little: the weights never sum to 0


@dataclass
class Member:
    """One run's candidates, best first, for each dev and test dialogue."""

    run: FinishedRun
    name: str
    dev_score: float  # its best candidates' dev score (morpheme final) on the ensemble's dev rows
    dev: list[list[str]] = field(default_factory=list)
    test: list[list[str]] = field(default_factory=list)
    dev_names: list[str] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # of its dev rows


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
        if utility > best_utility + TIE:
            best, best_utility = i, utility
    return Pick(*flat[best])


def pick_all(members: list[Member], split: str, weights: list[float], rows: list[int] | None = None) -> list[Pick]:
    """The picks of these rows (default: all) of a split, every member's candidates weighted as given."""
    rows = list(range(len(getattr(members[0], split)))) if rows is None else rows
    morpheme_texts(t for m in members for i in rows for t in getattr(m, split)[i])  # one batched analysis
    return [mbr([getattr(m, split)[i] for m in members], weights) for i in rows]


def weights_on(members: list[Member], rows: list[int]) -> list[float]:
    """Each member's dev score on these rows (its best candidates), as its weight."""
    refs = [[members[0].references[i]] for i in rows]
    return [max(score([m.dev[i][0] for i in rows], refs, "morpheme").final, WEIGHT_FLOOR) for m in members]


def dev_picks(members: list[Member], weighted: bool) -> tuple[list[Pick], dict[str, Any]]:
    """The dev picks, and how they were weighted: equally, or cross-fitted (even rows picked with weights
    measured on the odd rows and the reverse), so that no row's pick used its own reference."""
    n = len(members[0].dev)
    if not weighted:
        return pick_all(members, "dev", [1.0] * len(members)), {"kind": "equal"}
    folds = [list(range(0, n, 2)), list(range(1, n, 2))]
    picks: list[Pick | None] = [None] * n
    measured = []
    for fold, other in ((folds[0], folds[1]), (folds[1], folds[0])):
        w = weights_on(members, other)
        measured.append(w)
        for i, p in zip(fold, pick_all(members, "dev", w, fold), strict=True):
            picks[i] = p
    return [p for p in picks if p is not None], {"kind": "dev score, cross-fitted on even and odd dev rows",
                                                  "even_rows": measured[0], "odd_rows": measured[1]}


# ---------------------------------------------------------------- members


def _table(path: Path, columns: list[str], fix: str) -> pd.DataFrame:
    """One of a run's CSV files, checked: a damaged one is a line naming it and the fix."""
    try:
        return read_table(path, columns)
    except DialsumError as err:
        raise DialsumError(f"{err}; {fix}") from None


def load_member(run_dir: Path, tuned: bool) -> Member:
    """A finished run's own outputs (or tuned ones) and their rows, every file read and checked."""
    run = _tuned(open_run(run_dir)) if tuned else open_run(run_dir)
    member = Member(run, run.name, 0.0)
    if tuned:
        dev_file, test_file = run.dir / "tune" / "dev_predictions.csv", run.dir / "submission_tuned.csv"
        fix = "run dialsum tune on the run again"
    else:
        dev_file, test_file = run_dir / "dev_predictions.csv", run_dir / "submission.csv"
        fix = "the run's file is damaged: restore it, or train the run again"
        if run.metrics.submission is None and not test_file.exists():
            raise DialsumError(f"{run_dir}: trained with --no-submission, so it has no submission.csv; write it "
                               f"with `dialsum predict {run_dir} --input TEST_CSV --out {test_file}`")
    dev = _table(dev_file, ["fname", "summary", "reference"], fix)
    test = _table(test_file, ["fname", "summary"], fix)
    member.dev_names, member.references = list(dev["fname"]), list(dev["reference"])
    member.test_names = list(test["fname"])
    member.dev, member.test = [[s] for s in dev["summary"]], [[s] for s in test["summary"]]
    return member


def _tuned(run: FinishedRun) -> FinishedRun:
    """The run with its tuned generation settings (`tune/best.yaml`); a tuning that chose on the rows it
    reported (before held-out scoring) is refused."""
    best = run.dir / "tune" / "best.yaml"
    if not best.is_file() or not (run.dir / TUNE_RESULT).is_file():
        raise DialsumError(f"{run.dir}: --tuned, but the run has no tune/best.yaml; run dialsum tune on it first")
    if run.tune_result().heldout is None:
        raise DialsumError(f"{run.dir / TUNE_RESULT}: written before tuning held rows out (its tuned outputs were "
                           "chosen on the dev rows they were scored on); run dialsum tune on the run again")
    return replace(run, cfg=config.with_generation(run.cfg, best))


def _generated(member: Member, k: int) -> None:
    """Replace a member's candidates by its k best beams of its dev rows and of test, generated again (with
    its tuned generation settings under --tuned: `load_member` opened the run with them)."""
    cfg = member.run.cfg
    dev = read_dev(cfg).set_index("fname")
    test = read_test(cfg)
    _check_same_rows(member, dev, list(test["fname"]), Path(cfg.data.dir))
    tokenizer, model = member.run.load()
    encoder = prompt.make_encoder(tokenizer, member.run.info.family, cfg)
    strip = generation.decoder_tokens_to_strip(tokenizer)
    for split, dialogues in (("dev", dev.loc[member.dev_names, "dialogue"]), ("test", test["dialogue"])):
        inputs = encoder.inputs(list(dialogues))
        setattr(member, split, generation.generate_candidates(model, tokenizer, inputs, cfg.generation, strip, k))


def _check_same_rows(member: Member, dev: pd.DataFrame, test_names: list[str], data_dir: Path) -> None:
    """The data a run's config points at must still hold the dialogues its outputs are of."""
    missing = [f for f in member.dev_names if f not in dev.index]
    if missing or test_names != member.test_names:
        raise DialsumError(f"{member.run.dir}: its config's data ({data_dir}) no longer holds the dialogues of "
                           f"its outputs ({'dev ' + missing[0] if missing else 'test'}); restore data.dir")


def _same_rows(members: list[Member], tuned: bool) -> None:
    """Align the members on the same dev rows (with --tuned: those every member's tuning held out) and check
    that they hold the same test rows, in the same order."""
    first = members[0]
    for member in members[1:]:
        if member.test_names != first.test_names:
            raise DialsumError(f"{member.run.dir}: its test rows differ from those of {first.run.dir} "
                               f"({len(member.test_names)} against {len(first.test_names)} dialogues, or another "
                               "order); ensemble runs scored on the same data")
        if not tuned and member.dev_names != first.dev_names:
            raise DialsumError(f"{member.run.dir}: its dev rows differ from those of {first.run.dir} "
                               f"({len(member.dev_names)} against {len(first.dev_names)} dialogues, or another "
                               "order); ensemble runs scored on the same data")
    if tuned:
        shared = set.intersection(*(set(m.dev_names) for m in members))
        if not shared:
            raise DialsumError("--tuned: no dev row is held out by every run's tuning; tune them on the same dev "
                               "file (a larger --dev-rows holds out fewer rows, so the same --dev-rows is safest)")
        order = [f for f in first.dev_names if f in shared]
        for m in members:
            index = {f: i for i, f in enumerate(m.dev_names)}
            rows = [index[f] for f in order]
            m.dev_names, m.references, m.dev = order, [m.references[i] for i in rows], [m.dev[i] for i in rows]


# ---------------------------------------------------------------- the command


@dataclass
class EnsembleOptions:
    runs: list[Path]
    out: Path
    candidates: int = 1
    weighted: bool = False
    tuned: bool = False


def check_options(opts: EnsembleOptions) -> None:
    """What cannot make an ensemble, or cannot run, refused before any file is read."""
    runs, k = len(opts.runs), opts.candidates
    if runs < 2:
        raise DialsumError("ensemble: give at least two run directories")
    if k < 1:
        raise DialsumError(f"--candidates {k}: must be at least 1")
    problem = pool_problem(runs, k, "--candidates")
    if problem:
        raise DialsumError(problem)


def pool_problem(runs: int, k: int, option: str) -> str | None:
    """Why `runs` runs with `k` candidates each cannot make an MBR ensemble (`option` names k); None if they can."""
    pool = runs * k
    if pool < MIN_POOL:
        return (f"ensemble: {runs} runs x {option} {k} = {pool} candidates per dialogue, and MBR needs at least "
                f"{MIN_POOL} to pick (of two, the first run, or the stronger one with --weighted, always wins); "
                f"add {option} {-(-MIN_POOL // runs)}, or a third run")
    if pool > MAX_POOL:
        table = pool * pool * TABLE_BYTES
        return (f"{option} {k}: {runs} runs x {k} = {pool:,} candidates per dialogue; MBR scores every pair "
                f"({pool * pool:,} scores, {_size(table)} as a table, per dialogue) and generation would keep "
                f"{k:,} beams of each input; at most {MAX_POOL} per dialogue, so {option} {MAX_POOL // runs} or "
                "fewer here")
    return None


def _size(n_bytes: float) -> str:
    """1.3e12 -> '1.2 TB' (binary units)."""
    power = min(int(math.log(max(n_bytes, 1), 1024)), 4)
    return f"{n_bytes / 1024 ** power:.1f} {('B', 'KB', 'MB', 'GB', 'TB')[power]}"


def check_distinct(runs: list[Path], command: str = "ensemble") -> None:
    """Each run once: the same directory under two spellings (or a link), or a copy of a run (an identical
    metrics.json: it records the run's own training time and paths), would count one run twice."""
    seen: dict[Path, Path] = {}
    copies: dict[bytes, Path] = {}
    for run in runs:
        where = run.resolve()
        if where in seen:
            raise DialsumError(f"{command}: {seen[where]} and {run} are the same run directory; give each run once")
        seen[where] = run
        metrics = run / "metrics.json"
        content = metrics.read_bytes() if metrics.is_file() else None
        if content is not None and content in copies:
            raise DialsumError(f"{command}: {copies[content]} and {run} hold the same run (identical metrics.json: "
                               "one is a copy of the other); give each run once")
        if content is not None:
            copies[content] = run


def ensemble_runs(opts: EnsembleOptions) -> EnsembleResult:
    check_options(opts)
    check_distinct([Path(r) for r in opts.runs])
    out = paths.check_folder(opts.out, "--out")
    if (out / "submission.csv").exists():
        raise DialsumError(f"--out {out}: already holds an ensemble's submission.csv; choose another folder")
    members = [load_member(Path(r), opts.tuned) for r in opts.runs]
    _same_rows(members, opts.tuned)
    if opts.weighted and len(members[0].dev_names) < 2:
        raise DialsumError("--weighted: the ensemble has 1 dev row; weights are measured on other rows than the "
                           "ones they pick, so it needs at least 2; leave --weighted out")
    names = [m.name for m in members]
    for m in members:  # two runs of one experiment are told apart by their directories
        if names.count(m.name) > 1:
            m.name = f"{m.name} ({m.run.dir})"
    if opts.candidates > 1:
        for m in members:
            _generated(m, opts.candidates)
    everything = list(range(len(members[0].dev)))
    for m, w in zip(members, weights_on(members, everything), strict=True):  # the same rows and references
        m.dev_score = w
    picks, weighting = dev_picks(members, opts.weighted)
    test_weights = [m.dev_score for m in members] if opts.weighted else [1.0] * len(members)
    weighting["test"] = test_weights
    test_picks = pick_all(members, "test", test_weights)
    refs = [[r] for r in members[0].references]
    ensemble_score = score([p.text for p in picks], refs, "morpheme").final
    pause("ensemble")  # the chaos benchmark's kill point (dialsum.pause)
    return _write(opts, members, picks, test_picks, ensemble_score, weighting)


def _write(opts: EnsembleOptions, members: list[Member], dev_picks: list[Pick], test_picks: list[Pick],
           ensemble_score: float, weighting: dict[str, Any]) -> EnsembleResult:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    first = members[0]
    generation.write_submission(out / "submission.csv", first.test_names, [p.text for p in test_picks])
    atomic_write_rows(out / "submission_sources.csv", ["fname", "run", "candidate"],
                      ((f, members[p.member].name, p.rank) for f, p in zip(first.test_names, test_picks, strict=True)))
    atomic_write_rows(out / "dev_predictions.csv", ["fname", "summary", "reference", "run", "candidate"],
                      ((f, p.text, r, members[p.member].name, p.rank)
                       for f, p, r in zip(first.dev_names, dev_picks, first.references, strict=True)))
    result = EnsembleResult(
        dev_final=ensemble_score, dev_rows=len(dev_picks),
        dev_rows_scored="held out by every member's tuning" if opts.tuned else "all dev rows",
        candidates=opts.candidates, weighted=opts.weighted, tuned=opts.tuned, weights=weighting,
        members=[EnsembleMember(name=m.name, run_dir=str(m.run.dir), dev_final=m.dev_score,
                                dev_picks=sum(p.member == i for p in dev_picks),
                                test_picks=sum(p.member == i for p in test_picks)) for i, m in enumerate(members)],
    )
    result.write(out / ENSEMBLE)
    return result
