"""`dialsum ensemble`: minimum-Bayes-risk picks across finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, assert_clean_error, run_cli

from dialsum import config
from dialsum.config import RunOptions
from dialsum.ensemble import mbr
from dialsum.metrics import score
from dialsum.recipe import run_experiment


def test_mbr_picks_the_consensus_candidate():
    candidates = [["#Person1#은 커피를 주문하고 #Person2#가 가격을 알려준다."],
                  ["#Person1#은 커피를 주문하고 #Person2#가 가격을 말한다."],
                  ["날씨가 좋아서 공원에 간다."]]
    pick = mbr(candidates, [1.0, 1.0, 1.0])
    assert pick.member in (0, 1) and pick.text == candidates[pick.member][0]
    # between the two that agree, the run trusted more wins; the outlier never does, whatever its weight
    assert mbr(candidates, [1.0, 10.0, 1.0]).member == 1
    assert mbr(candidates, [10.0, 1.0, 1.0]).member == 0
    assert mbr(candidates, [1.0, 1.0, 1.5]).member in (0, 1)
    assert mbr([["하나"]], [1.0]).text == "하나"


def test_mbr_ties_go_to_the_earlier_run_and_the_better_beam():
    same = [["같은 요약이다.", "다른 요약"], ["같은 요약이다."]]
    assert (mbr(same, [1.0, 1.0]).member, mbr(same, [1.0, 1.0]).rank) == (0, 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data) -> list[Path]:
    root = tmp_path_factory.mktemp("ens")
    out = []
    for name, cfg_path in (("a", "04_batch_optimization_rtx3090.yaml"), ("b", "03_high_learning_rate_rtx3090.yaml"),
                           ("c", "01_baseline_kobart_rtx3090.yaml")):
        cfg = config.load(Path("configs/experiments") / cfg_path, [*FAST, f"data.dir={small_data}"])
        run_experiment(cfg, RunOptions(init="tiny", run_dir=root / name, max_steps=6))
        out.append(root / name)
    return out


@pytest.mark.slow
def test_ensemble_of_tiny_runs_writes_a_submission_in_test_order(runs, small_data, tmp_path):
    proc = run_cli("ensemble", *map(str, runs), "--out", str(tmp_path / "ens"))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "ens"
    submission = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(small_data / "test.csv", dtype=str)
    assert list(submission.columns) == ["fname", "summary"] and list(submission["fname"]) == list(test["fname"])
    sources = pd.read_csv(out / "submission_sources.csv", dtype=str)
    members = {r.name: pd.read_csv(r / "submission.csv", dtype=str, keep_default_na=False) for r in runs}
    names = {json.loads((r / "metrics.json").read_text())["experiment"]: r.name for r in runs}
    for i, row in sources.iterrows():  # each pick is the named run's own summary for that dialogue
        assert submission["summary"][i] == members[names[row["run"]]]["summary"][i]
    result = json.loads((out / "ensemble.json").read_text())
    dev = pd.read_csv(out / "dev_predictions.csv", dtype=str, keep_default_na=False)
    assert result["dev_final"] == pytest.approx(score(list(dev["summary"]), [[r] for r in dev["reference"]]).final)
    for m, run in zip(result["members"], runs, strict=True):
        own = json.loads((run / "metrics.json").read_text())["dev"]["morpheme"]["final"]
        assert m["dev_final"] == pytest.approx(own, abs=0.01)
    assert sum(m["dev_picks"] for m in result["members"]) == len(dev) == 12
    assert "ensemble: dev" in proc.stdout
    again = run_cli("ensemble", *map(str, runs), "--out", str(out))
    assert_clean_error(again, "already holds an ensemble's submission.csv")


@pytest.mark.slow
def test_beams_as_candidates(runs, tmp_path):
    proc = run_cli("ensemble", *map(str, runs[:2]), "--out", str(tmp_path / "ens"), "--candidates", "2", "--weighted")
    assert proc.returncode == 0, proc.stderr
    sources = pd.read_csv(tmp_path / "ens" / "dev_predictions.csv", dtype=str)
    assert set(sources["candidate"]) <= {"0", "1"}
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["candidates"] == 2


@pytest.mark.parametrize(("args", "needle"), [
    (["--candidates", "0"], "--candidates 0: must be at least 1"),
    (["--tuned"], "has no tune/best.yaml; run dialsum tune on it first"),
])
def test_bad_ensemble_input_is_one_line(runs, tmp_path, args, needle):
    assert_clean_error(run_cli("ensemble", *map(str, runs), "--out", str(tmp_path / "e"), *args), needle)


def test_one_run_or_a_missing_run_is_refused(runs, tmp_path):
    assert_clean_error(run_cli("ensemble", str(runs[0]), "--out", str(tmp_path / "e")), "at least two run directories")
    assert_clean_error(run_cli("ensemble", str(runs[0]), str(tmp_path), "--out", str(tmp_path / "e"), "--candidates",
                               "2"), "not a finished run (config.yaml is missing)")


@pytest.mark.parametrize(("runs_given", "args", "needles"), [
    (2, [], ["2 runs x --candidates 1 = 2 candidates per dialogue", "add --candidates 2, or a third run"]),
    (3, ["--candidates", "100000"], ["--candidates 100000: 3 runs x 100000 = 300,000 candidates per dialogue",
                                     "(90,000,000,000 scores, 2.6 TB as a table, per dialogue)",
                                     "at most 128 per dialogue, so --candidates 42 or fewer here"]),
])
def test_ensembles_that_cannot_pick_or_cannot_run_are_refused_up_front(tmp_path, runs_given, args, needles):
    folders = [tmp_path / f"run{i}" for i in range(runs_given)]  # refused before any folder is read
    assert_clean_error(run_cli("ensemble", *map(str, folders), "--out", str(tmp_path / "e"), *args), *needles)
    assert not (tmp_path / "e").exists()


def test_the_same_run_twice_is_refused_however_it_is_spelled(runs, tmp_path):
    import os
    import shutil

    from conftest import ROOT

    relative = os.path.relpath(runs[0], ROOT)  # run_cli runs in ROOT
    link = tmp_path / "link"
    link.symlink_to(runs[0])
    copy = shutil.copytree(runs[0], tmp_path / "copy")
    for again, needle in ((relative, "are the same run directory"), (str(link), "are the same run directory"),
                          (str(copy), "hold the same run (identical metrics.json")):
        proc = run_cli("ensemble", str(runs[0]), str(runs[1]), again, "--out", str(tmp_path / "e"))
        assert_clean_error(proc, needle, "give each run once")


def test_a_damaged_member_file_is_one_line_naming_it(runs, tmp_path):
    import shutil

    damaged = shutil.copytree(runs[0], tmp_path / "damaged")
    frame = pd.read_csv(damaged / "dev_predictions.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["summary"]).to_csv(damaged / "dev_predictions.csv", index=False)
    proc = run_cli("ensemble", str(damaged), str(runs[1]), str(runs[2]), "--out", str(tmp_path / "e"))
    assert_clean_error(proc, f"{damaged / 'dev_predictions.csv'}: missing column(s) summary",
                       "restore it, or train the run again")
    assert not (tmp_path / "e").exists()


def test_a_run_trained_without_a_submission_says_how_to_write_one(runs, tmp_path):
    import json
    import shutil

    dev_only = shutil.copytree(runs[0], tmp_path / "dev_only")  # as `dialsum train --no-submission` leaves it
    (dev_only / "submission.csv").unlink()
    metrics = json.loads((dev_only / "metrics.json").read_text())
    metrics.pop("submission")
    (dev_only / "metrics.json").write_text(json.dumps(metrics))
    proc = run_cli("ensemble", str(dev_only), str(runs[1]), str(runs[2]), "--out", str(tmp_path / "e"))
    assert_clean_error(proc, f"{dev_only}: trained with --no-submission", f"dialsum predict {dev_only}")
    assert not (tmp_path / "e").exists()


def test_a_tuning_that_predates_held_out_rows_is_refused_with_tuned(runs, tmp_path):
    import shutil

    old = shutil.copytree(runs[0], tmp_path / "old")
    (old / "tune").mkdir(exist_ok=True)
    (old / "tune" / "best.yaml").write_text("generation: {num_beams: 2}\n", encoding="utf-8")
    (old / "tune" / "result.json").write_text(json.dumps({"own_score": 40.0, "best_score": 41.0}), encoding="utf-8")
    proc = run_cli("ensemble", str(old), str(runs[1]), str(runs[2]), "--out", str(tmp_path / "e"), "--tuned")
    assert_clean_error(proc, "tune/result.json: written before tuning held rows out", "run dialsum tune on the run again")


def test_weights_never_pick_the_rows_they_were_measured_on(monkeypatch):
    """Cross-fitting: even dev rows are picked with weights measured on the odd ones, and the reverse."""
    from dialsum import ensemble

    texts = ["#Person1#은 커피를 주문한다.", "#Person1#은 녹차를 주문한다.", "#Person2#가 가격을 말한다.",
             "날씨가 좋다.", "#Person1#은 주스를 산다."]
    members = [ensemble.Member(Path(f"r{m}"), f"r{m}", 0.0, dev=[[texts[(i + m) % 5]] for i in range(5)],
                               references=texts) for m in range(3)]
    seen = []
    original = ensemble.weights_on
    monkeypatch.setattr(ensemble, "weights_on", lambda ms, rows: seen.append(rows) or original(ms, rows))
    picks, weighting = ensemble.dev_picks(members, weighted=True)
    assert seen == [[1, 3], [0, 2, 4]] and len(picks) == 5
    assert weighting["even_rows"] != weighting["odd_rows"]
    for fold, measured in (([0, 2, 4], weighting["even_rows"]), ([1, 3], weighting["odd_rows"])):
        again = ensemble.pick_all(members, "dev", measured, fold)
        assert [(p.member, p.text) for p in again] == [(picks[i].member, picks[i].text) for i in fold]
    assert ensemble.dev_picks(members, weighted=False)[1] == {"kind": "equal"}


@pytest.mark.slow
def test_tuned_members_are_scored_on_the_rows_every_one_held_out(runs, tmp_path):
    import shutil

    from dialsum.tune import split_dev

    tuned = [shutil.copytree(r, tmp_path / r.name, ignore=shutil.ignore_patterns("tune")) for r in runs]
    for run, rows in zip(tuned, ("6", "8", "6"), strict=True):
        proc = run_cli("tune", str(run), "--trials", "2", "--dev-rows", rows)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("ensemble", *map(str, tuned), "--out", str(tmp_path / "ens"), "--tuned", "--weighted")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    dev = pd.read_csv(tmp_path / "ens" / "dev_predictions.csv", dtype=str, keep_default_na=False)
    names = list(pd.read_csv(runs[0] / "dev_predictions.csv", dtype=str)["fname"])
    assert list(dev["fname"]) == [names[i] for i in split_dev(12, 8).heldout]  # 8 searched: 4 held out by all
    assert result["dev_rows"] == 4 and result["dev_rows_scored"] == "held out by every member's tuning"
    assert result["dev_final"] == pytest.approx(score(list(dev["summary"]), [[r] for r in dev["reference"]]).final)


@pytest.mark.slow
def test_each_weighted_pick_has_the_highest_expected_agreement(runs, tmp_path):
    """MBR's guarantee, checked by brute force: each dev and test pick is the candidate whose final ROUGE against
    every candidate, weighted by the candidate's run, sums highest (the earlier run on a tie); a dev row is picked
    with the weights measured on the other half of the rows."""
    proc = run_cli("ensemble", *map(str, runs), "--out", str(tmp_path / "ens"), "--weighted")
    assert proc.returncode == 0, proc.stderr
    weights = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["weights"]
    index = {json.loads((r / "metrics.json").read_text())["experiment"]: i for i, r in enumerate(runs)}
    checked = 0
    for picks_file, own_file, weights_of in (("dev_predictions.csv", "dev_predictions.csv",
                                              lambda i: weights["even_rows" if i % 2 == 0 else "odd_rows"]),
                                             ("submission_sources.csv", "submission.csv", lambda i: weights["test"])):
        picks = pd.read_csv(tmp_path / "ens" / picks_file, dtype=str, keep_default_na=False)
        own = [list(pd.read_csv(r / own_file, dtype=str, keep_default_na=False)["summary"]) for r in runs]
        for i, run_name in enumerate(picks["run"]):
            candidates, w = [texts[i] for texts in own], weights_of(i)
            utility = [sum(wk * score([c], [[other]]).final for wk, other in zip(w, candidates, strict=True))
                       for c in candidates]
            best = next(k for k, u in enumerate(utility) if u >= max(utility) - 1e-6)
            assert index[run_name] == best, (picks_file, i, utility, run_name)
            checked += len(set(candidates)) > 1  # a row whose runs disagree: the pick was a choice
    assert checked >= 5
