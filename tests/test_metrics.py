"""Tests of the competition score (dialsum.metrics) and the `dialsum score` command.

    .venv/bin/pytest tests/test_metrics.py

The `rouge==1.0.1` package is the oracle for whitespace mode; it raises on an empty hypothesis or
reference where dialsum returns 0.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge import Rouge
from rouge import rouge_score as oracle_score

from dialsum import metrics
from dialsum.metrics import Scores, lcs_words, morphemes, rouge_pair, score

WORDS = [
    "#Person1#은", "#Person2#는", "#Person1#", "#PhoneNumber#", "학교에", "집에", "갔다", "왔다", "친구를",
    "만났다", "the", "cat", "sat", "on", "mat", "a", "b", ",", "!", "?", "...", "3.5", "e.g.",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "  ", "\n", ". ", ".", " . ", "\t"]
_ORACLE = Rouge()

texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=25).map(
    lambda parts: "".join(w + s for w, s in parts)
)


def oracle_pair(hyp: str, ref: str) -> tuple[float, float, float] | None:
    """rouge==1.0.1's (R1, R2, RL) F1, or None where it raises (no sentence in hyp or ref)."""
    try:
        s = _ORACLE.get_scores(hyp, ref)[0]
    except ValueError:
        return None
    return (s["rouge-1"]["f"], s["rouge-2"]["f"], s["rouge-l"]["f"])


def assert_matches_oracle(hyp: str, ref: str) -> None:
    expected = oracle_pair(hyp, ref)
    ours = rouge_pair(hyp, ref, "whitespace")
    if expected is None or not hyp.strip() or not ref.strip():
        assert ours == (0.0, 0.0, 0.0)
    else:
        assert ours == pytest.approx(expected, abs=1e-9), (hyp, ref)


# ----------------------------------------------------------------------------- whitespace == rouge 1.0.1


@settings(max_examples=400, deadline=None)
@given(texts, texts)
def test_whitespace_pair_matches_rouge_package(hyp: str, ref: str) -> None:
    assert_matches_oracle(hyp, ref)


@settings(max_examples=150, deadline=None)
@given(texts)
def test_whitespace_matches_rouge_package_on_a_perturbed_copy(ref: str) -> None:
    # a prediction sharing most words with its reference exercises long LCS tracebacks
    words = ref.split(" ")
    assert_matches_oracle(" ".join(words[1::2] + words[::2]), ref)
    assert_matches_oracle(" ".join(w for w in words if "a" not in w), ref)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=8))
def test_whitespace_average_matches_rouge_package_avg(pairs: list[tuple[str, str]]) -> None:
    pairs = [(h, r) for h, r in pairs if h.strip() and r.strip() and oracle_pair(h, r) is not None]
    if not pairs:
        return
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    expected = _ORACLE.get_scores(hyps, refs, avg=True)
    ours = score(hyps, [[r] for r in refs], "whitespace")
    assert ours.rouge1 == pytest.approx(expected["rouge-1"]["f"], abs=1e-9)
    assert ours.rouge2 == pytest.approx(expected["rouge-2"]["f"], abs=1e-9)
    assert ours.rougeL == pytest.approx(expected["rouge-l"]["f"], abs=1e-9)
    assert ours.n == len(pairs)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), max_size=16), st.lists(st.sampled_from("abcdef"), max_size=16))
def test_lcs_words_is_the_lcs_the_package_reconstructs(x: list[str], y: list[str]) -> None:
    assert lcs_words(x, y) == set(oracle_score._recon_lcs(x, y)._ngrams)


EDGE_CASES = {
    "single token": ("고양이", "고양이"),
    "single token, different": ("고양이", "강아지"),
    "repeated n-grams": ("a b a b a b a b", "a b a a b b a b"),
    "repeated words both sides": ("#Person1#은 갔다 갔다 갔다", "갔다 #Person1#은 갔다"),
    "no period": ("#Person1#은 학교에 갔다 그리고 집에 왔다", "#Person1#은 집에 왔다"),
    "many periods": ("a. b. c.. d... e", "a b. c d. e."),
    "sentence order swapped": ("집에 왔다. 학교에 갔다.", "학교에 갔다. 집에 왔다."),
    "punctuation only": ("! ? ,", "! ,"),
    "punctuation and periods": ("?. !. .", "!. ?"),
    "whitespace-only sentence": ("a . . b", "a. . b"),
    "hypothesis longer": ("#Person1#은 학교에 갔다. 그리고 친구를 만났다. 집에 왔다. 잤다.", "#Person1#은 학교에 갔다."),
    "identical": ("#Person1#은 학교에 갔다. #Person2#는 집에 왔다.",) * 2,
    "numbers with dots": ("가격은 3.5 달러", "가격은 3.50 달러"),
    "newlines and tabs": ("a\nb\tc", "a b c"),
}  # fmt: skip


@pytest.mark.parametrize("hyp,ref", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_whitespace_edge_cases_match_rouge_package(hyp: str, ref: str) -> None:
    assert oracle_pair(hyp, ref) is not None
    assert_matches_oracle(hyp, ref)


def test_identical_texts_score_one_up_to_the_smoothing_term() -> None:
    r1, r2, rl = rouge_pair("#Person1#은 학교에 갔다.", "#Person1#은 학교에 갔다.")
    assert r1 == r2 == rl == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("empty", ["", "   ", "\n", ".", "...", " . "])
def test_empty_prediction_scores_zero_and_never_raises(empty: str) -> None:
    for tokenize in ("whitespace", "morpheme"):
        result = score([empty, "a b"], [["a b"], ["a b", "c"]], tokenize)
        assert result.per_dialogue[0] == (0.0, 0.0, 0.0)
        assert result.per_dialogue[1][0] > 0


def test_rouge_package_raises_where_dialsum_gives_zero() -> None:
    for hyp, ref in (("", "a b"), ("...", "a b"), ("a b", "")):
        with pytest.raises(ValueError):
            _ORACLE.get_scores(hyp, ref)
        assert rouge_pair(hyp, ref) == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- averaging and the result type


def test_multi_reference_average_worked_by_hand() -> None:
    # Dialogue 1: "a b c" against "a b c" gives 1, 1, 1 (F1 = 2pr/(p+r+1e-8), so 1 - ~5e-9).
    #   against "a b d": R1 overlap {a,b}: p = r = 2/3 -> 2/3; R2 overlap {ab} of 2 each -> 1/2;
    #   RL: LCS "a b" = 2 of 3 words -> 2/3.  Per dialogue: R1 = (1 + 2/3)/2 = 5/6,
    #   R2 = (1 + 1/2)/2 = 3/4, RL = 5/6.
    # Dialogue 2: "x y" against "z w" gives 0, 0, 0.
    # Over dialogues: R1 = 5/12, R2 = 3/8, RL = 5/12; sum = 29/24; final = 29/24/3*100 = 40.2777...
    # (a flat average over the three pairs would give R1 = 5/9 instead).
    result = score(["a b c", "x y"], [["a b c", "a b d"], ["z w"]], "whitespace")
    assert result.per_dialogue[0] == pytest.approx((5 / 6, 3 / 4, 5 / 6), abs=1e-7)
    assert (result.rouge1, result.rouge2, result.rougeL) == pytest.approx((5 / 12, 3 / 8, 5 / 12), abs=1e-7)
    assert result.sum == pytest.approx(29 / 24, abs=1e-7)
    assert result.final == pytest.approx(29 / 24 / 3 * 100, abs=1e-5)
    assert result.n == 2


def test_scores_dict_rows_and_length_check() -> None:
    result = score(["a b", "c"], ["a b", "d"], "whitespace")  # a plain string is one reference
    assert set(result.to_dict()) == {"rouge1", "rouge2", "rougeL", "final", "sum", "n", "tokenize"}
    assert result.to_dict()["tokenize"] == "whitespace"
    rows = result.per_dialogue_rows()
    assert [r["fname"] for r in rows] == ["0", "1"]
    assert rows[1]["final"] == 0.0 and rows[0]["final"] == pytest.approx(100, abs=1e-5)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        score(["a", "b"], [["a"]], "whitespace")
    with pytest.raises(ValueError, match="tokenize"):
        score(["a"], [["a"]], "spaces")
    assert score([], [], "whitespace") == Scores(0.0, 0.0, 0.0, 0.0, 0.0, 0, "whitespace", [])


# ----------------------------------------------------------------------------- morphemes


def test_morphemes_keep_mask_tokens_whole() -> None:
    assert morphemes("#Person1#은 학교에 갔다.")[:2] == ["#Person1#", "은"]
    tokens = morphemes("#Person2#에게 #PhoneNumber#로 전화했다")
    assert "#Person2#" in tokens and "#PhoneNumber#" in tokens
    assert "에게" in tokens and "로" in tokens


def test_morpheme_split_rewards_a_shared_stem_with_another_particle() -> None:
    pred, ref = "#Person1#은 학교에 갔다", "#Person1#이 학교로 갔다"
    by_space = score([pred], [[ref]], "whitespace")
    by_morpheme = score([pred], [[ref]], "morpheme")
    # whitespace: only "갔다" is shared (R1 = 1/3); morphemes share #Person1#, 학교, 가, 었, 다
    assert by_space.rouge1 == pytest.approx(1 / 3, abs=1e-7)
    assert by_morpheme.rouge1 > 0.6 > by_space.rouge1
    assert by_morpheme.rouge1 < 1.0  # the particles still differ
    assert by_morpheme.final > by_space.final and by_morpheme.tokenize == "morpheme"


def test_morpheme_cache_returns_the_same_analysis() -> None:
    text = "#Person1#은 내일 공항에 간다."
    first = metrics.morpheme_texts([text, text])[text]
    assert metrics.morpheme_texts([text])[text] == first
    metrics.clear_morpheme_cache()
    assert metrics.morpheme_texts([text])[text] == first


# ----------------------------------------------------------------------------- files and the CLI


def run_score(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("score", *map(str, args))


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


GOLD = (
    "fname,dialogue,summary,topic\n"
    'dev_0,"#Person1#: 안녕\n#Person2#: 응",#Person1#은 학교에 갔다.,학교\n'
    "dev_1,x,#Person2#는 집에 왔다.,집\n"
    "dev_2,y,#Person1#은 친구를 만났다.,친구\n"
)
PRED = "fname,summary\ndev_2,#Person1#은 친구를 만났다.\ndev_0,<s>#Person1#이 학교에 갔다.</s>\ndev_1,\n"
GOLD3 = (
    "fname,summary1,summary2,summary3\n"
    "dev_0,#Person1#은 학교에 갔다.,#Person1#이 학교로 갔다.,학교에 갔다.\n"
    "dev_1,#Person2#는 집에 왔다.,집에 왔다.,#Person2#는 귀가했다.\n"
    "dev_2,#Person1#은 친구를 만났다.,친구를 만났다.,#Person1#은 친구와 만났다.\n"
)


def test_score_files_matches_by_fname_and_scores_predictions_as_written(tmp_path: Path) -> None:
    gold, pred = write(tmp_path / "dev.csv", GOLD), write(tmp_path / "pred.csv", PRED)
    result = metrics.score_files(pred, gold, "whitespace")
    expected = score(
        ["<s>#Person1#이 학교에 갔다.</s>", "", "#Person1#은 친구를 만났다."],
        [["#Person1#은 학교에 갔다."], ["#Person2#는 집에 왔다."], ["#Person1#은 친구를 만났다."]],
        "whitespace",
    )
    assert result.per_dialogue == expected.per_dialogue
    assert [r["fname"] for r in result.per_dialogue_rows()] == ["dev_0", "dev_1", "dev_2"]


def test_cli_scores_single_reference_gold_and_writes_json(tmp_path: Path) -> None:
    gold, pred = write(tmp_path / "dev.csv", GOLD), write(tmp_path / "pred.csv", PRED)
    out = tmp_path / "out" / "scores.json"
    proc = run_score("--pred", pred, "--gold", gold, "--tokenize", "whitespace", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "whitespace" in proc.stdout and "ROUGE-L" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {"rouge1", "rouge2", "rougeL", "final", "sum", "n", "tokenize"} <= set(data)
    assert data["n"] == 3 and data["tokenize"] == "whitespace"
    assert data["final"] == pytest.approx(metrics.score_files(pred, gold, "whitespace").final, abs=1e-12)
    assert f"{data['final']:.2f}" in proc.stdout


def test_cli_scores_multi_reference_gold_by_morpheme_by_default(tmp_path: Path) -> None:
    gold, pred = write(tmp_path / "gold3.csv", GOLD3), write(tmp_path / "pred.csv", PRED)
    out = tmp_path / "scores.json"
    proc = run_score("--pred", pred, "--gold", gold, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "morpheme" in proc.stdout and "leaderboard" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["tokenize"] == "morpheme" and data["n"] == 3 and data["references_per_dialogue"] == 3
    single = metrics.score_files(pred, write(tmp_path / "dev.csv", GOLD), "morpheme")
    assert data["final"] != pytest.approx(single.final)  # the extra references change the score


def test_cli_writes_per_dialogue_rows_that_average_to_the_final(tmp_path: Path) -> None:
    import csv

    gold, pred = write(tmp_path / "gold3.csv", GOLD3), write(tmp_path / "pred.csv", PRED)
    out, rows = tmp_path / "scores.json", tmp_path / "rows.csv"
    proc = run_score("--pred", pred, "--gold", gold, "--json", out, "--rows", rows)
    assert proc.returncode == 0, proc.stderr
    table = list(csv.DictReader(rows.open(encoding="utf-8")))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [r["fname"] for r in table] == ["dev_0", "dev_1", "dev_2"]
    assert sum(float(r["final"]) for r in table) / len(table) == pytest.approx(data["final"], abs=1e-3)
    assert all(r["references"].count(" || ") == 2 for r in table)  # three references each


BROKEN = {
    "fnames differ": (PRED.replace("dev_1,", "dev_9,"), GOLD, ["dev_1", "dev_9", "1 gold fname"]),
    "duplicate fname": (PRED + "dev_0,again\n", GOLD, ["duplicate fname dev_0"]),
    "missing summary column": ("fname,text\ndev_0,a\n", GOLD, ["missing column", "summary"]),
    "empty prediction file": ("", GOLD, ["empty"]),
    "non-UTF-8 gold": (PRED, GOLD.encode("cp949"), ["not UTF-8"]),
    "gold without summary columns": (PRED, "fname,dialogue\ndev_0,a\ndev_1,b\ndev_2,c\n", ["summary1"]),
    "empty gold reference": (
        PRED,
        GOLD3.replace("집에 왔다.,#Person2#", ",#Person2#"),
        ["summary2", "dev_1"],
    ),
}


@pytest.mark.parametrize("pred_text,gold_text,fragments", BROKEN.values(), ids=BROKEN.keys())
def test_cli_reports_broken_files_in_one_line(
    tmp_path: Path, pred_text: str, gold_text: str | bytes, fragments: list[str]
) -> None:
    pred, gold = write(tmp_path / "pred.csv", pred_text), write(tmp_path / "gold.csv", gold_text)
    proc = run_score("--pred", pred, "--gold", gold, "--tokenize", "whitespace")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_predictions_are_scored_as_submitted_with_a_warning(tmp_path: Path) -> None:
    """The leaderboard scores the file as it is: decoder tokens left in it count against it."""
    gold = write(tmp_path / "dev.csv", GOLD)
    clean = write(tmp_path / "clean.csv", PRED.replace("<s>", "").replace("</s>", ""))
    dirty = write(tmp_path / "pred.csv", PRED)
    as_is = metrics.score_files(dirty, gold, "whitespace")
    assert as_is.decoder_token_rows == 1 and metrics.score_files(clean, gold, "whitespace").decoder_token_rows == 0
    assert as_is.final < metrics.score_files(clean, gold, "whitespace").final
    proc = run_score("--pred", dirty, "--gold", gold, "--tokenize", "whitespace", "--json", tmp_path / "s.json")
    assert proc.returncode == 0
    assert "warning: " in proc.stderr and "1 of 3 predictions hold decoder tokens" in proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["decoder_token_rows"] == 1
    assert "warning" not in run_score("--pred", clean, "--gold", gold).stderr


def test_the_submission_writer_never_writes_decoder_tokens(tmp_path: Path) -> None:
    from dialsum.generation import write_submission

    path = write_submission(tmp_path / "s.csv", ["a", "b"], ["<s>#Person1#은 갔다.</s><pad>", "<usr>요약</s>"])
    assert path.read_text(encoding="utf-8") == "fname,summary\na,#Person1#은 갔다.\nb,요약\n"
