"""Tests of the suite comparison report, on fake run directories that follow the train/suite contract.

pytest tests/test_report.py
"""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_clean_error, chromium, run_cli

from dialsum.errors import DialsumError
from dialsum.report.build import report_suite_dir, write_report
from dialsum.report.inputs import Experiment, load_experiment
from dialsum.report.plots import final_scores_figure, plot_label
from dialsum.report.render import code_fence, fmt_count, fmt_minutes, reference_blocks
from dialsum.report.results import fmt_memory, loss_points, loss_stability, recommend, reference, result_row
from dialsum.suite.state import ExperimentRecord

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("plot_loss.png", "plot_dev_score.png", "plot_final_scores.png", "plot_memory.png")
STEPS = list(range(10, 210, 10))

# Fixture design: each recommendation has a different winner.
#   best score: kobart_baseline   fastest: kobart_high_lr   least memory: t5_korean
#   most stable loss: kobart_batch_opt (flat, almost noiseless tail); mt5_qlora failed (OOM, no run dir)
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "t5_korean": dict(
        label="Korean T5", model="eenzeenee/t5-base-korean-summarization", arch="t5", params=247_587_840,
        trainable=247_587_840, micro=20, accum=2, lr=8e-5, morpheme=41.32, whitespace=35.10,
        train_seconds=300.0, peak_mb=1210.0, expected=40, wall=352.0,
        loss=lambda i, s: 1.2 + 2.0 * math.exp(-s / 60), truncate_log=True, submission=True,
    ),
    "kobart_baseline": dict(
        label="KoBART baseline", model="digit82/kobart-summarization", arch="bart", params=123_859_968,
        trainable=2_359_296, micro=16, accum=3, lr=6e-5, morpheme=46.81, whitespace=40.25,
        train_seconds=420.0, peak_mb=2650.0, expected=45, wall=470.5,
        loss=lambda i, s: 1.0 + 2.5 * math.exp(-s / 50) + 0.12 * (-1) ** i, truncate_log=False, submission=True,
    ),
    "kobart_high_lr": dict(
        label="KoBART high LR", model="digit82/kobart-summarization", arch="bart", params=123_859_968,
        trainable=2_359_296, micro=14, accum=4, lr=1.2e-4, morpheme=44.02, whitespace=38.40,
        train_seconds=140.0, peak_mb=2400.0, expected=35, wall=190.0,
        loss=lambda i, s: 1.1 + 2.0 * math.exp(-s / 30) + 0.35 * (-1) ** i, truncate_log=False, submission=True,
    ),
    "kobart_batch_opt": dict(
        label="KoBART batch-optimized", model="digit82/kobart-summarization", arch="bart", params=123_859_968,
        trainable=2_359_296, micro=16, accum=4, lr=7e-5, morpheme=45.90, whitespace=39.70,
        train_seconds=380.0, peak_mb=2710.0, expected=40, wall=431.0,
        loss=lambda i, s: 1.05 + 2.0 * math.exp(-s / 20) + 0.01 * (-1) ** i, truncate_log=False, submission=False,
    ),
}  # fmt: skip
BASELINE = {"name": "longest turn", "n": 200, "morpheme": 21.56, "whitespace": 10.51}
OOM_LINES = [
    '  File "training.py", line 88, in train',
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 23.65 GiB total)",
]


def scores(final: float) -> dict[str, Any]:
    """As metrics.json holds them: R1/R2/RL F1 as fractions, final = their mean x 100."""
    total = 3 * final / 100
    return {"rouge1": total * 0.4, "rouge2": total * 0.2, "rougeL": total * 0.4, "final": final, "n": 200}


def write_memory_csv(path: Path, peak_mb: float, *, samples: int = 12, total_mb: float = 24576.0) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_s", "kind", "used_mb", "total_mb", "util_pct", "temp_c"])
        for k in range(samples):
            used = 400 + (peak_mb - 400) * min(1.0, k / (samples / 2))
            writer.writerow(
                [1_700_000_000 + 15 * k, "gpu", f"{used:.1f}", total_mb, "" if k == 0 else 87, ""]
            )
    return path


def write_run(root: Path, name: str, spec: dict[str, Any]) -> Path:
    run_dir = root / "runs" / name / "20250101-120000"
    run_dir.mkdir(parents=True)
    metrics = {
        "experiment": name, "model_name": spec["model"], "arch": spec["arch"], "init": "tiny",
        "parameters": spec["params"], "trainable_parameters": spec["trainable"],
        "micro_batch": spec["micro"], "grad_accum": spec["accum"], "effective_batch": spec["micro"] * spec["accum"],
        "learning_rate": spec["lr"], "epochs": 1.0, "steps": STEPS[-1],
        "dev": {"morpheme": scores(spec["morpheme"]), "whitespace": scores(spec["whitespace"])},
        "train_seconds": spec["train_seconds"], "peak_memory_mb": spec["peak_mb"], "memory_kind": "cuda",
        "train_tokens_per_second": 5123.4, "adaptations": [f"{name}: dataloader_num_workers=36 exceeds 2 cores; using 2"],
        "submission": "submission.csv", "baseline": BASELINE,
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    lines = []
    for i, step in enumerate(STEPS):
        lines.append(json.dumps({"step": step, "epoch": step / STEPS[-1], "loss": spec["loss"](i, step)}))
        if step % 50 == 0:
            eval_final = spec["morpheme"] * (0.6 + 0.4 * step / STEPS[-1])
            lines.append(json.dumps({"step": step, "eval_loss": 2.0, "eval_final": eval_final}))
    text = "\n".join(lines) + "\n" + ('{"step": 210, "epoch": 1.0, "lo' if spec["truncate_log"] else "")
    (run_dir / "train_log.jsonl").write_text(text, encoding="utf-8")
    if spec["submission"]:
        (run_dir / "submission.csv").write_text(
            "fname,summary\ntest_0,#Person1#은 표를 산다.\n", encoding="utf-8"
        )
    return run_dir


def typed(records: list[dict[str, Any]]) -> list[ExperimentRecord]:
    return [ExperimentRecord.model_validate(rec) for rec in records]


def make_records(root: Path) -> list[dict[str, Any]]:
    mt5_memory = write_memory_csv(root / "mt5_memory.csv", 24100.0)
    records = [{
        "name": "mt5_qlora", "label": "mT5 XLSum QLoRA", "config": "configs/experiments/01_mt5.yaml",
        "state": "failed", "failure": {"kind": "oom", "message": "CUDA out of memory at micro-batch 32", "lines": OOM_LINES},
        "expected_minutes": 60, "wall_seconds": 95.0, "attempts": 3, "run_dir": None,
        "memory_csv": str(mt5_memory), "adaptations": ["suite: out of memory at micro-batch 32; retried with 16 x 4"],
    }]  # fmt: skip
    for name, spec in EXPERIMENTS.items():
        records.append({
            "name": name, "label": spec["label"], "config": f"configs/experiments/{name}.yaml",
            "state": "finished", "failure": None, "expected_minutes": spec["expected"],
            "wall_seconds": spec["wall"], "attempts": 1, "run_dir": str(write_run(root, name, spec)),
            "memory_csv": str(write_memory_csv(root / f"{name}_memory.csv", spec["peak_mb"] + 300)),
            "adaptations": [],
        })  # fmt: skip
    return records


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("suite")
    records = typed(make_records(root))
    out_dir = root / "report"
    write_tunings(records, out_dir)
    paths = write_report(out_dir, records, title="Experiment comparison: main5")
    return {"root": root, "out": out_dir, "records": records, "paths": paths}


TUNED = {"trials": 20, "dev_rows": 200, "split_seed": 1,
         "search": {"rows": 100, "trials": 20, "own": 43.1, "chosen": 46.2, "chosen_trial": 7, "chosen_is_own": False,
                    "chosen_params": {"num_beams": 2}},
         "heldout": {"rows": 100, "own": 44.02, "tuned": 44.9}, "recommended": "tuned", "best_params": {"num_beams": 2}}
ENSEMBLE = {"dev_final": 47.5, "dev_rows": 100, "dev_rows_scored": "held out by every member's tuning",
            "candidates": 1, "weighted": True, "tuned": True, "weights": {"kind": "dev score, cross-fitted"},
            "members": [{"name": n, "run_dir": "x", "dev_final": 44.0, "dev_picks": 30, "test_picks": 33}
                        for n in ("kobart_high_lr", "kobart_baseline", "t5_korean")]}


def write_tunings(records: list[ExperimentRecord], out_dir: Path) -> None:
    """KoBART high LR tuned with held-out rows; Korean T5 by a version that chose on the rows it reported."""
    runs = {rec.name: Path(rec.run_dir) for rec in records if rec.run_dir}
    (runs["kobart_high_lr"] / "tune").mkdir()
    (runs["kobart_high_lr"] / "tune" / "result.json").write_text(json.dumps(TUNED), encoding="utf-8")
    (runs["t5_korean"] / "tune").mkdir()
    old = {"trials": 20, "dev_rows": 200, "own_score": 41.3, "best_score": 45.0, "best": "trial 3"}
    (runs["t5_korean"] / "tune" / "result.json").write_text(json.dumps(old), encoding="utf-8")
    (out_dir / "ensemble").mkdir(parents=True)
    (out_dir / "ensemble" / "ensemble.json").write_text(json.dumps(ENSEMBLE), encoding="utf-8")


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- the full report


def test_every_output_file_is_written(suite: dict[str, Any]) -> None:
    expected = {"results.json", "results.csv", "report.md", "report.html", "experiment_index.csv", *PLOTS}
    assert expected <= {p.name for p in suite["out"].iterdir()}
    assert {p.name for p in suite["paths"].values()} == expected
    assert not [p for p in suite["out"].iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", PLOTS)
def test_plots_are_real_png_images(suite: dict[str, Any], name: str) -> None:
    path = suite["out"] / name
    width, height = png_size(path)
    assert path.stat().st_size > 10_000
    assert 700 <= width <= 2000 and 300 <= height <= 1500


def test_results_csv_has_one_row_per_experiment_with_its_values(suite: dict[str, Any]) -> None:
    rows = read_csv_rows(suite["out"] / "results.csv")
    assert [r["name"] for r in rows] == [rec.name for rec in suite["records"]]
    by_name = {r["name"]: r for r in rows}
    for name, spec in EXPERIMENTS.items():
        row = by_name[name]
        assert row["state"] == "finished" and row["failure_kind"] == ""
        assert int(row["parameters"]) == spec["params"]
        assert int(row["effective_batch"]) == spec["micro"] * spec["accum"]
        assert float(row["learning_rate"]) == pytest.approx(spec["lr"])
        assert float(row["morpheme_final"]) == pytest.approx(spec["morpheme"])
        assert float(row["whitespace_final"]) == pytest.approx(spec["whitespace"])
        assert float(row["train_minutes"]) == pytest.approx(spec["train_seconds"] / 60, abs=0.01)
        assert float(row["expected_minutes"]) == spec["expected"]
        assert float(row["peak_memory_mb"]) == spec["peak_mb"] and row["memory_kind"] == "cuda"
        assert f"{name}: dataloader_num_workers" in row["adaptations"]
    failed = by_name["mt5_qlora"]
    assert (failed["state"], failed["failure_kind"], failed["submission"]) == ("failed", "oom", "")
    assert failed["memory_kind"] == "gpu" and float(failed["peak_memory_mb"]) == pytest.approx(24100.0)


def test_results_json_matches_the_csv(suite: dict[str, Any]) -> None:
    doc = json.loads((suite["out"] / "results.json").read_text(encoding="utf-8"))
    csv_rows = read_csv_rows(suite["out"] / "results.csv")
    assert doc["final_tokenization"] == "morpheme"
    assert [e["name"] for e in doc["experiments"]] == [r["name"] for r in csv_rows]
    assert doc["experiments"][0]["adaptations"] == suite["records"][0].adaptations


def test_truncated_log_line_is_skipped_and_noted(suite: dict[str, Any]) -> None:
    doc = json.loads((suite["out"] / "results.json").read_text(encoding="utf-8"))
    t5 = next(e for e in doc["experiments"] if e["name"] == "t5_korean")
    assert any("1 unparseable line" in note for note in t5["notes"])
    assert t5["loss_cv"] is not None


def test_recommendations_name_the_measured_winners(suite: dict[str, Any]) -> None:
    doc = json.loads((suite["out"] / "results.json").read_text(encoding="utf-8"))
    winners = {rec["key"]: rec["name"] for rec in doc["recommendations"]}
    assert winners == {
        "best_score": "kobart_baseline",
        "fastest": "kobart_high_lr",
        "least_memory_cuda": "t5_korean",
        "most_stable": "kobart_batch_opt",
    }
    md = (suite["out"] / "report.md").read_text(encoding="utf-8")
    section = md.split("## Recommendations")[1].split("\n## ")[0]
    assert "KoBART baseline (kobart_baseline): morpheme final 46.81" in section
    assert "KoBART high LR (kobart_high_lr): 2.3 min of training" in section
    assert "coefficient of variation" in section


def test_report_shows_the_failure_with_its_log_lines(suite: dict[str, Any]) -> None:
    md = (suite["out"] / "report.md").read_text(encoding="utf-8")
    failures = md.split("## Failures")[1].split("\n## ")[0]
    assert "mT5 XLSum QLoRA (mt5_qlora): oom" in failures
    assert "CUDA out of memory at micro-batch 32" in failures
    code = failures.split("```")[1]
    assert all(line in code for line in OOM_LINES)
    assert "| failed (oom) |" in md


def section(md: str, title: str) -> str:
    return md.split(f"## {title}\n")[1].split("\n## ")[0]


def test_report_tables_are_human_readable(suite: dict[str, Any]) -> None:
    md = (suite["out"] / "report.md").read_text(encoding="utf-8")
    setup = next(line for line in section(md, "Setup").splitlines() if line.startswith("| 3 |"))
    assert "KoBART baseline" in setup and "124M (2.4M)" in setup and "16 x 3 = 48" in setup
    assert "| tiny copy of digit82/kobart-summarization |" in setup  # not the real checkpoint
    cost = next(line for line in section(md, "Cost").splitlines() if line.startswith("| 3 |"))
    assert "| 7.0 min | 45 min (full-size model) | 2.6 GB (cuda) |" in cost
    assert "full-size model trained as configured" in md
    scores_row = next(line for line in section(md, "Scores").splitlines() if line.startswith("| 3 |"))
    assert "| 46.81 | 56.17 / 28.09 / 56.17 | 40.25 |" in scores_row  # R1 / R2 / RL x 100, as the finals
    assert "morpheme tokenization" in md and "whitespace" in md
    for plot in PLOTS:
        assert f"]({plot})" in md
    assert "retried with 16 x 4" in md.split("## Adaptations")[1]


def test_html_report_is_self_contained(suite: dict[str, Any]) -> None:
    page = (suite["out"] / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(PLOTS)
    assert "mt5_qlora" in page and "<table>" in page and 'src="plot_' not in page


def test_experiment_index_lists_only_produced_submissions(suite: dict[str, Any]) -> None:
    rows = read_csv_rows(suite["out"] / "experiment_index.csv")
    produced = [name for name, spec in EXPERIMENTS.items() if spec["submission"]]
    assert [r["name"] for r in rows] == produced
    for row in rows:
        assert Path(row["submission"]).is_file()
        assert float(row["morpheme_final"]) == pytest.approx(EXPERIMENTS[row["name"]]["morpheme"])
        assert row["submission_mtime"][:4].isdigit()
    md = (suite["out"] / "report.md").read_text(encoding="utf-8")
    assert "submission submission.csv listed in metrics.json but not found" in md


# ---------------------------------------------------------------- edge cases


def test_single_experiment_gets_every_recommendation(tmp_path: Path) -> None:
    spec = EXPERIMENTS["kobart_baseline"]
    record = {"name": "kobart_baseline", "label": spec["label"], "state": "finished", "expected_minutes": 45,
              "wall_seconds": 400.0, "run_dir": str(write_run(tmp_path, "kobart_baseline", spec))}  # fmt: skip
    paths = write_report(tmp_path / "out", typed([record]))
    doc = json.loads(paths["results_json"].read_text(encoding="utf-8"))
    assert {rec["name"] for rec in doc["recommendations"]} == {"kobart_baseline"}
    assert len(doc["recommendations"]) == 4
    assert "Only one experiment finished" in paths["report_md"].read_text(encoding="utf-8")
    assert "plot_memory" not in paths  # no memory log given: the plot is left out, not faked


def test_report_without_any_finished_run_still_written(tmp_path: Path) -> None:
    records = [
        {
            "name": "mt5_qlora",
            "state": "failed",
            "failure": {"kind": "config", "message": "bad key", "lines": []},
        },
        {"name": "t5_korean", "state": "pending", "run_dir": str(tmp_path / "never_created")},
    ]
    stale = tmp_path / "out" / "plot_loss.png"  # from an earlier report that had a training log
    stale.parent.mkdir()
    stale.write_bytes(PNG_SIGNATURE)
    paths = write_report(tmp_path / "out", typed(records))
    md = paths["report_md"].read_text(encoding="utf-8")
    assert not stale.exists() and "Training loss: no data recorded" in md
    assert "nothing to recommend" in md and "### mt5_qlora: config" in md
    assert set(paths) >= {"plot_final_scores", "results_csv", "experiment_index"}
    assert "plot_loss" not in paths and "plot_dev_score" not in paths
    assert read_csv_rows(paths["experiment_index"]) == []


def test_unreadable_inputs_become_notes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{not json", encoding="utf-8")
    memory = tmp_path / "memory.csv"
    memory.write_text("time_s,kind,used_mb,total_mb,util_pct,temp_c\nx,gpu,,24576,,\n", encoding="utf-8")
    record = {"name": "broken", "state": "finished", "run_dir": str(run_dir), "memory_csv": str(memory)}
    paths = write_report(tmp_path / "out", typed([record]))
    row = json.loads(paths["results_json"].read_text(encoding="utf-8"))["experiments"][0]
    assert row["notes"] == ["metrics.json unreadable (JSONDecodeError)"]
    assert row["morpheme_final"] is None and row["peak_memory_mb"] is None


def test_loss_stability_is_the_coefficient_of_variation_of_the_second_half() -> None:
    points = [(10, 5.0), (20, 4.0), (30, 2.0), (40, 2.0), (50, 3.0), (60, 1.0)]
    tail = [2.0, 3.0, 1.0]  # steps past 60 / 2
    mean = sum(tail) / len(tail)
    expected = math.sqrt(sum((v - mean) ** 2 for v in tail) / len(tail)) / mean
    assert loss_stability(points) == pytest.approx(expected)
    assert loss_stability(points[:4]) is None  # one point past the half: too few
    assert loss_stability([]) is None


def test_loss_points_skip_eval_lines_and_keep_the_last_value_of_a_repeated_step() -> None:
    log = [{"step": 10, "loss": 3.0}, {"step": 10, "eval_loss": 9.0}, {"step": 20, "loss": 2.0},
           {"step": 10, "loss": 2.5}, {"loss": 1.0}, {"step": 30, "loss": "nan"}]  # fmt: skip
    assert loss_points(log) == [(10, 2.5), (20, 2.0)]


def test_least_memory_is_compared_within_one_memory_kind() -> None:
    def row(name: str, mb: float, kind: str) -> dict[str, Any]:
        return {"name": name, "label": name, "state": "finished", "morpheme_final": None, "train_minutes": None,
                "peak_memory_mb": mb, "memory_kind": kind, "loss_cv": None, "dev_n": None}  # fmt: skip

    recs = recommend([row("a", 900.0, "rss"), row("b", 1500.0, "cuda"), row("c", 1200.0, "cuda")])
    assert {rec["key"]: rec["name"] for rec in recs} == {"least_memory_cuda": "c", "least_memory_rss": "a"}


@pytest.mark.parametrize(
    ("value", "text"), [(123_859_968, "124M"), (2_359_296, "2.4M"), (582_401_280, "582M"), (1.2e9, "1.2B")]
)
def test_parameter_counts_are_short(value: float, text: str) -> None:
    assert fmt_count(value) == text


def test_memory_and_time_formats() -> None:
    assert fmt_memory(1840.5) == "1.8 GB" and fmt_memory(512) == "512 MB"
    assert fmt_minutes(2.08) == "2.1 min" and fmt_minutes(None) == "-" and fmt_minutes(45, 0) == "45 min"


def test_plot_labels_fall_back_to_ascii() -> None:
    exp = Experiment(index=2, record=ExperimentRecord(name="kobart_baseline", label="KoBART 기본"), run_dir=None)
    assert plot_label(exp) == "kobart_baseline"
    exp.record.name = "기본"
    assert plot_label(exp) == "experiment 3"


def test_code_fence_outgrows_backticks_in_the_log() -> None:
    assert code_fence(["plain"]) == "```"
    assert code_fence(["a ```` b"]) == "`````"


# ---------------------------------------------------------------- suite state and the CLI


def test_cli_missing_state_file_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "suite_state.json" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"records": [', r"not valid JSON \(line 1"),
        ("[]", "not a suite state this dialsum can read"),
        ('{"suite": "s", "records": [{"state": "x"}]}', r"records\.0\.name: Field required"),
    ],
)
def test_broken_state_file_is_a_dialsum_error(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "suite_state.json").write_text(content, encoding="utf-8")
    with pytest.raises(DialsumError, match=fragment):
        report_suite_dir(tmp_path)


def test_cli_rewrites_the_report_from_the_state_file(tmp_path: Path) -> None:
    records = make_records(tmp_path)[:2]
    state = {"suite": "main5", "records": records}
    (tmp_path / "suite_state.json").write_text(json.dumps(state), encoding="utf-8")
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Experiment comparison: main5")
    assert [r["name"] for r in read_csv_rows(tmp_path / "results.csv")] == ["mt5_qlora", "t5_korean"]


@pytest.mark.parametrize(("damage", "needles"), [
    ("{not json", ["metrics.json: not valid JSON (line 1, column 2"]),
    ('{"steps": "many"}', ["metrics.json: steps: Input should be a valid integer", "'many'"]),
])
def test_cli_refuses_a_corrupted_metrics_json_in_one_line_naming_it(tmp_path: Path, damage: str,
                                                                   needles: list[str]) -> None:
    records = make_records(tmp_path)[:3]
    broken = Path(records[2]["run_dir"]) / "metrics.json"
    broken.write_text(damage, encoding="utf-8")
    (tmp_path / "suite_state.json").write_text(json.dumps({"suite": "main5", "records": records}), encoding="utf-8")
    result = run_cli("report", str(tmp_path))
    assert_clean_error(result, str(broken), *needles)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.md").exists()  # refused before anything is written
    paths = write_report(tmp_path / "during", typed(records))  # the suite's own report notes it and goes on
    row = json.loads(paths["results_json"].read_text(encoding="utf-8"))["experiments"][2]
    assert row["notes"][0].startswith("metrics.json ")


def test_the_suite_and_experiment_descriptions_head_the_report(tmp_path: Path) -> None:
    records = make_records(tmp_path)[1:3]
    for rec, text in zip(records, ("Korean T5 already fine-tuned for summarization", ""), strict=True):
        path = Path(rec["run_dir"]) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "description": text}),
                        encoding="utf-8")
    state = {"suite": "main5", "description": "the five seed experiments compared", "records": records}
    (tmp_path / "suite_state.json").write_text(json.dumps(state), encoding="utf-8")
    report_suite_dir(tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    head, scores = md.split("## Scores")[0], section(md, "Scores")
    assert "The five seed experiments compared." in head
    assert "- **Korean T5**: Korean T5 already fine-tuned for summarization" in scores
    assert "**KoBART baseline**" not in scores.split("| #")[0]  # no description, no line
    assert read_csv_rows(tmp_path / "results.csv")[0]["description"] == "Korean T5 already fine-tuned for summarization"


def test_the_longest_turn_is_a_reference_row_and_a_line_on_the_score_plot(suite: dict[str, Any]) -> None:
    text = (suite["out"] / "report.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| ref |"))
    assert "Longest turn (extractive)" in row and "21.56" in row and "10.51" in row
    assert "scores 21.56 (morpheme) / 10.51 (whitespace) on the same dev rows" in text
    doc = json.loads((suite["out"] / "results.json").read_text(encoding="utf-8"))
    assert doc["reference"] == {"name": "longest turn", "final": {"morpheme": 21.56, "whitespace": 10.51}}
    rows = [result_row(load_experiment(i, rec, suite["out"]), suite["out"])
            for i, rec in enumerate(suite["records"])]
    fig = final_scores_figure([load_experiment(i, r, suite["out"]) for i, r in enumerate(suite["records"])], rows)
    levels = {line.get_ydata()[0] for line in fig.axes[0].get_lines()}
    assert {21.56, 10.51} <= levels


def test_no_reference_line_when_the_dev_rows_differ() -> None:
    rows = [{"baseline_morpheme_final": 21.5, "baseline_whitespace_final": 10.0},
            {"baseline_morpheme_final": 19.0, "baseline_whitespace_final": 9.0},
            {"baseline_morpheme_final": None, "baseline_whitespace_final": None}]
    assert reference(rows) is None
    assert "scored different dev rows" in reference_blocks(rows)[0][1]
    assert reference(rows[:1] + rows[2:]) == {"morpheme": 21.5, "whitespace": 10.0}


def test_tuned_scores_are_the_held_out_ones_and_an_older_tuning_shows_none(suite: dict[str, Any]) -> None:
    md = (suite["out"] / "report.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[1]: line for line in section(md, "Scores").splitlines() if line.startswith("| ")}
    assert "| 44.90 (own 44.02; 100 held-out rows) |" in rows["KoBART high LR"]
    assert "| 45.00" not in rows["Korean T5"] and "| - | finished |" in rows["Korean T5"]
    tuning = section(md, "Generation tuning")
    assert "on the 100 held-out rows the run's own settings score 44.02, the tuned ones 44.90" in tuning
    assert "written before tuning held dev rows out" in tuning
    by_name = {r["name"]: r for r in read_csv_rows(suite["out"] / "results.csv")}
    assert float(by_name["kobart_high_lr"]["tuned_final"]) == 44.9 and by_name["t5_korean"]["tuned_final"] == ""
    ensemble = next(line for line in section(md, "Scores").splitlines() if line.startswith("| ens |"))
    assert "on the 100 dev rows every member's tuning held out | 47.50 |" in ensemble
    assert "other half of the rows" in section(md, "Ensemble")


def test_adaptations_every_experiment_shares_are_shown_once(tmp_path: Path) -> None:
    shared = "training.bf16=true: this device has no bfloat16 support; training in float32"
    records = []
    for name in ("kobart_baseline", "kobart_high_lr"):
        run_dir = write_run(tmp_path, name, EXPERIMENTS[name])
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        metrics["adaptations"] = [shared, f"{name}: its own"]
        (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        records.append({"name": name, "state": "finished", "run_dir": str(run_dir)})
    md = write_report(tmp_path / "out", typed(records))["report_md"].read_text(encoding="utf-8")
    text = section(md, "Adaptations")
    assert text.count(shared) == 1 and "### All 2 experiments" in text
    assert "kobart_baseline: its own" in text and "kobart_high_lr: its own" in text


MT5 = dict(label="mT5 XLSum QLoRA", model="csebuetnlp/mT5_multilingual_XLSum", arch="mt5", params=4_970_240,
           trainable=3_059_712, micro=32, accum=2, lr=2.4e-3, morpheme=42.85, whitespace=27.07,
           train_seconds=78.4, peak_mb=1609.0, expected=60, wall=135.7, loss=lambda i, s: 1.0 + 3.0 * math.exp(-s / 40),
           truncate_log=False, submission=True)  # fmt: skip


def test_the_report_fits_a_laptop_screen_with_numbers_on_one_scale(tmp_path: Path) -> None:
    """A report of every kind of row (a failure, five finished tiny runs with the longest hub id, a tuned
    run, an ensemble) opened in Chromium in a 1,366-pixel-wide window: no sideways scroll, and every score
    x 100 (each final is the mean of its R1, R2 and RL)."""
    from playwright.sync_api import sync_playwright

    records = make_records(tmp_path)
    records.append({"name": "mt5_xlsum_qlora", "label": MT5["label"], "state": "finished", "expected_minutes": 60,
                    "wall_seconds": MT5["wall"], "run_dir": str(write_run(tmp_path, "mt5_xlsum_qlora", MT5))})
    out = tmp_path / "report"
    write_tunings(typed(records), out)
    write_report(out, typed(records), title="Experiment comparison: main5")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto((out / "report.html").as_uri())
        width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        cells = page.evaluate("""[...document.querySelectorAll('table')[0].querySelectorAll('tbody tr')]
                                 .map(tr => [...tr.children].map(td => td.innerText))""")
        browser.close()
    assert width <= inner == 1366
    scored = [row for row in cells if row[3] != "-"]
    assert len(scored) == len(EXPERIMENTS) + 1
    for row in scored:
        final, parts = float(row[2]), [float(v) for v in row[3].split(" / ")]
        assert all(1 < v < 100 for v in parts) and sum(parts) / 3 == pytest.approx(final, abs=0.01)
