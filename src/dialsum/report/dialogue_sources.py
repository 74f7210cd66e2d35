"""What the per-dialogue page shows, read from finished runs: each run's dev rows and summaries, its tuned
summaries with the rows its tuning searched, and an ensemble's picks.

    dialsum compare runs/a/<time> runs/b/<time> [runs/ensembles/abc] --out runs/compare/ab
    dialsum report runs/suites/main5            # the suite's dialogues.html, beside report.html
    pytest tests/test_dialogue_page.py -k "compare or suite"

A run's dev rows are those it was scored on (`finished_run.read_dev`: its config's dev file, cut to
`data.max_eval_samples`). The runs on one page must have been scored on the same dev rows (the same fnames
and dialogues, in the same order): `compare` refuses others in one line, and a suite's page leaves such a run
out with a note. A tuning's outputs are its held-out rows (`tune/dev_predictions.csv`); the rest of dev is
its search part, marked on the page. An ensemble's picks are unscored where its `ensemble.json` says its
score was chosen on the rows it was scored on (`score_is_honest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dialsum import paths, runfiles
from dialsum.csvio import read_table
from dialsum.ensemble import check_distinct
from dialsum.errors import DialsumError
from dialsum.finished_run import FinishedRun, open_run, read_dev
from dialsum.report.dialogues import PAGE, DevRow, PageOutput, write_page

RETRAIN = "restore it, or train the run again"


@dataclass
class PageInputs:
    """The dev rows of the first run and every output scored on them; why any other was left out."""

    dev: list[DevRow] = field(default_factory=list)
    outputs: list[PageOutput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def dev_rows(run: FinishedRun) -> list[DevRow]:
    """The dev rows a run was scored on, with their topics where the dev file has a `topic` column."""
    dev = read_dev(run.cfg)
    topics = dev["topic"] if "topic" in dev.columns else [""] * len(dev)
    return [DevRow(str(f), str(d), [str(s)], "" if t is None or t != t else str(t))  # t != t: a NaN topic
            for f, d, s, t in zip(dev["fname"], dev["dialogue"], dev["summary"], topics, strict=True)]


def _summaries(path: Path, fix: str, columns: tuple[str, ...] = ("fname", "summary")) -> dict[str, list[str]]:
    try:
        table = read_table(path, list(columns))
    except DialsumError as err:
        raise DialsumError(f"{err}; {fix}") from None
    return {c: [str(v) for v in table[c]] for c in columns}


def run_outputs(run: FinishedRun, label: str = "") -> list[PageOutput]:
    """A run's own dev summaries, and its tuned ones where it was tuned."""
    own = _summaries(run.dir / "dev_predictions.csv", RETRAIN)
    outputs = [PageOutput(run.name, "run", dict(zip(own["fname"], own["summary"], strict=True)), label)]
    tuned = tuned_output(run, label, own["fname"])
    return outputs + ([tuned] if tuned else [])


def tuned_output(run: FinishedRun, label: str, dev_names: list[str]) -> PageOutput | None:
    """The tuned summaries of the rows a tuning held out; the rows it searched are marked. A tuning from
    before held-out rows chose its settings on every row it shows: all marked, none scored."""
    if not (run.dir / runfiles.TUNE_RESULT).is_file():
        return None
    result = run.tune_result()
    table = _summaries(run.dir / "tune" / "dev_predictions.csv", "run dialsum tune on the run again")
    tuned = dict(zip(table["fname"], table["summary"], strict=True))
    if result.heldout is None:
        return PageOutput(run.name, "tuned", tuned, label, chosen_on=frozenset(tuned),
                          note="tuned before tuning held rows out: its settings were chosen on every row it shows, "
                               "so none is scored; run dialsum tune again")
    searched = frozenset(dev_names) - frozenset(tuned)
    return PageOutput(run.name, "tuned", tuned, label, chosen_on=searched,
                      note=f"its generation settings were chosen on {len(searched)} dev rows (marked searched) "
                           f"and are scored on the {len(tuned)} its tuning held out")


def ensemble_output(folder: Path, label: str = "Ensemble") -> PageOutput:
    """An ensemble's dev picks and the run each came from (`dialsum ensemble --out FOLDER`)."""
    fix = "run dialsum ensemble again"
    result = runfiles.read(folder / runfiles.ENSEMBLE, runfiles.EnsembleResult, fix)
    table = _summaries(folder / "dev_predictions.csv", fix, ("fname", "summary", "run"))
    picks = dict(zip(table["fname"], table["summary"], strict=True))
    chosen = frozenset() if result.score_is_honest else frozenset(picks)
    how = "weighted by dev scores" if result.weighted else "equal weights"
    note = (f"minimum-Bayes-risk picks among {len(result.members)} runs ({how}), scored on "
            f"{result.dev_rows_scored or 'its dev rows'}")
    if chosen:
        note = "its weights were measured on the rows it picked, so none of its rows is scored; run it again"
    return PageOutput(folder.name or "ensemble", "ensemble", picks, label, chosen_on=chosen,
                      sources=dict(zip(table["fname"], table["run"], strict=True)), note=note)


def same_dev(run: FinishedRun, dev: list[DevRow], first: FinishedRun) -> str | None:
    """Why `run` was not scored on the dev rows `dev` of `first`; None when it was."""
    own = dev_rows(run)
    if [(r.fname, r.dialogue) for r in own] == [(r.fname, r.dialogue) for r in dev]:
        return None
    where = f"{run.cfg.data.dir}/{run.cfg.data.dev_file}"
    first_where = f"{first.cfg.data.dir}/{first.cfg.data.dev_file}"
    return (f"{run.dir}: scored on other dev rows than {first.dir} ({len(own)} rows of {where} against "
            f"{len(dev)} of {first_where}, or other dialogues)")


def check_outputs(dev: list[DevRow], outputs: list[PageOutput], where: Path) -> None:
    """Every summary is of a dev row: a file that names others is damaged."""
    known = {r.fname for r in dev}
    for out in outputs:
        stray = [f for f in out.summaries if f not in known]
        if stray:
            raise DialsumError(f"{where}: its dev predictions name {len(stray)} fname(s) its dev rows do not hold "
                               f"({stray[0]}, ...); {RETRAIN}")


def compare_runs(targets: list[Path], out: Path, title: str = "Run comparison") -> Path:
    """`dialsum compare`: the page for finished runs (and ensemble folders) that are not in one suite."""
    folder = paths.check_folder(out, "--out")
    if (folder / PAGE).exists():
        raise DialsumError(f"--out {folder}: already holds a {PAGE}; choose another folder or move it aside")
    ensembles = [t for t in targets if (t / runfiles.ENSEMBLE).is_file()]
    runs = [t for t in targets if t not in ensembles]
    check_distinct(runs, "compare")
    opened = [open_run(r) for r in runs or [_first_member(ensembles[0])]]
    page = PageInputs(dev_rows(opened[0]))
    for run in opened if runs else []:
        problem = same_dev(run, page.dev, opened[0])
        if problem:
            raise DialsumError(f"{problem}; compare runs scored on the same dev file")
        outputs = run_outputs(run, _label(run, opened))
        check_outputs(page.dev, outputs, run.dir)
        page.outputs += outputs
    for folder_in in ensembles:
        output = ensemble_output(folder_in, f"Ensemble {folder_in.name}")
        check_outputs(page.dev, [output], folder_in)
        page.outputs.append(output)
    return write_page(folder, title, page.dev, page.outputs)


def suite_inputs(runs: list[tuple[Path, str, list[str]]], ensemble: Path) -> PageInputs:
    """A suite's page: each finished run (its directory, label and report notes) and the suite's ensemble
    folder, on the first run's dev rows. A run scored on other dev rows, or whose files cannot be used, is left
    off with a note in the report: the page never stops the report."""
    page, first = PageInputs(), None
    for run_dir, label, notes in runs:
        try:
            run = open_run(run_dir)
            if first is None:
                page.dev, first = dev_rows(run), run
            problem = same_dev(run, page.dev, first)
            if problem:
                raise DialsumError(problem)
            outputs = run_outputs(run, label)
            check_outputs(page.dev, outputs, run.dir)
            page.outputs += outputs
        except DialsumError as err:
            notes.append(f"left off {PAGE}: {err}")
    if first is not None and (ensemble / runfiles.ENSEMBLE).is_file():
        try:
            output = ensemble_output(ensemble)
            check_outputs(page.dev, [output], ensemble)
            page.outputs.append(output)
        except DialsumError as err:
            page.notes.append(f"the ensemble is left off {PAGE}: {err}")
    return page


def _first_member(folder: Path) -> Path:
    result = runfiles.read(folder / runfiles.ENSEMBLE, runfiles.EnsembleResult, "run dialsum ensemble again")
    return Path(result.members[0].run_dir)


def _label(run: FinishedRun, runs: list[FinishedRun]) -> str:
    """The run's label; two runs of one experiment are told apart by their directories."""
    label = run.metrics.label or run.name
    return f"{label} ({run.dir})" if sum(r.name == run.name for r in runs) > 1 else label
