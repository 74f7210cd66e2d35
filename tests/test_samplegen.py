"""Tests of the synthetic Korean sample generator and of the shipped `data/sample/`.

pytest tests/test_samplegen.py
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from dialsum.csvio import read_table
from dialsum.errors import DialsumError
from dialsum.samplegen import SAMPLE_ARGS, SCENARIOS, check_args, has_final_consonant, josa, write_sample

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "sample"
FILES = ("train.csv", "dev.csv", "test.csv", "test_gold.csv")
COLUMNS = {
    "train.csv": ["fname", "dialogue", "summary", "topic"],
    "dev.csv": ["fname", "dialogue", "summary", "topic"],
    "test.csv": ["fname", "dialogue"],
    "test_gold.csv": ["fname", "summary1", "summary2", "summary3"],
}
MASKS = {"#PhoneNumber#", "#Address#", "#Email#", "#DateOfBirth#", "#CarNumber#", "#CardNumber#"}
TURN = re.compile(r"^#Person\d#: .+")


@pytest.fixture(scope="module")
def sample() -> dict[str, pd.DataFrame]:
    return {name: read_table(SHIPPED / name, COLUMNS[name], what="sample") for name in FILES}


@pytest.fixture(scope="module")
def labelled(sample: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([sample["train.csv"], sample["dev.csv"]], ignore_index=True)


def _summaries(sample: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(dialogue, summary) for every labelled row and every test reference."""
    pairs = [
        (r.dialogue, r.summary) for df in (sample["train.csv"], sample["dev.csv"]) for r in df.itertuples()
    ]
    gold = sample["test_gold.csv"].merge(sample["test.csv"], on="fname")
    pairs += [(r.dialogue, getattr(r, f"summary{i}")) for r in gold.itertuples() for i in (1, 2, 3)]
    return pairs


# --- particles --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "particle", "expected"),
    [
        ("식당", "는", "식당은"),
        ("카페", "은", "카페는"),
        ("사과", "이", "사과가"),
        ("책", "가", "책이"),
        ("우유", "을", "우유를"),
        ("빵", "를", "빵을"),
        ("친구", "과", "친구와"),
        ("동생", "와", "동생과"),
        ("부산", "로", "부산으로"),
        ("학교", "으로", "학교로"),
        ("서울", "으로", "서울로"),
        ("민수", "아", "민수야"),
        ("지훈", "야", "지훈아"),
        ("#Person1#", "는", "#Person1#은"),
        ("#Person2#", "은", "#Person2#는"),
        ("#Person3#", "가", "#Person3#이"),
        ("#Person4#", "이", "#Person4#가"),
        ("#Person1#", "와", "#Person1#과"),
        ("#PhoneNumber#", "으로", "#PhoneNumber#로"),
        ("KTX", "을", "KTX를"),
        ("SQL", "는", "SQL은"),
        ("10", "를", "10을"),
        ("2", "을", "2를"),
        ("1000", "가", "1000이"),
        ("3만 원", "와", "3만 원과"),
        ("7", "으로", "7로"),
        ("6", "으로", "6으로"),
        ("저녁 7시 반", "으로", "저녁 7시 반으로"),
        ("오후 2시", "으로", "오후 2시로"),
        ("원룸", "이에요", "원룸이에요"),
        ("오피스텔", "예요", "오피스텔이에요"),
        ("빌라", "이에요", "빌라예요"),
    ],
)
def test_josa_picks_the_form_by_final_consonant(word: str, particle: str, expected: str) -> None:
    assert josa(word, particle) == expected


def test_josa_agrees_with_unicode_decomposition_for_every_hangul_syllable() -> None:
    for code in range(ord("가"), ord("힣") + 1):
        syllable = chr(code)
        jamo = unicodedata.normalize("NFD", syllable)
        has_final, rieul = len(jamo) == 3, jamo[-1] == "\u11af"
        assert has_final_consonant("집" + syllable) is has_final
        assert josa(syllable, "을") == syllable + ("을" if has_final else "를")
        assert josa(syllable, "로") == syllable + ("으로" if has_final and not rieul else "로")


def test_josa_rejects_an_unknown_particle() -> None:
    with pytest.raises(ValueError, match="unknown particle"):
        josa("식당", "에서")


# --- the shipped sample -----------------------------------------------------------------------
def test_shipped_sample_equals_a_fresh_generation(tmp_path: Path) -> None:
    write_sample(tmp_path, **SAMPLE_ARGS)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), (
            f"{name}: regenerate data/sample"
        )
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert all(f"--{key} {value}" in readme for key, value in SAMPLE_ARGS.items())


def test_shipped_sample_is_small() -> None:
    assert sum((SHIPPED / name).stat().st_size for name in FILES) < 3 * 1024 * 1024


def test_files_have_the_competition_columns_rows_and_fnames(sample: dict[str, pd.DataFrame]) -> None:
    counts = {"train.csv": "train", "dev.csv": "dev", "test.csv": "test", "test_gold.csv": "test"}
    for name, df in sample.items():
        assert list(df.columns) == COLUMNS[name]
        assert len(df) == SAMPLE_ARGS[counts[name]]
        prefix = counts[name]
        assert df["fname"].tolist() == [f"{prefix}_{i}" for i in range(len(df))]
        assert list(pd.read_csv(SHIPPED / name).columns) == COLUMNS[name]  # plain pandas reads it too
    assert sample["test_gold.csv"]["fname"].tolist() == sample["test.csv"]["fname"].tolist()


def test_dialogue_cells_are_quoted_multiline_turns() -> None:
    raw = (SHIPPED / "dev.csv").read_text(encoding="utf-8")
    assert raw.startswith("fname,dialogue,summary,topic\n")
    assert '\ndev_0,"#Person1#: ' in raw
    assert raw.count("\n") > 4 * SAMPLE_ARGS["dev"]  # newlines inside the quoted dialogue cells


def test_turns_speakers_and_lengths(sample: dict[str, pd.DataFrame]) -> None:
    dialogues = pd.concat([sample[n]["dialogue"] for n in ("train.csv", "dev.csv", "test.csv")])
    speaker_counts = set()
    for text in dialogues:
        lines = text.split("\n")
        assert 4 <= len(lines) <= 16
        assert all(TURN.match(line) for line in lines), text
        speakers = re.findall(r"^#Person(\d)#:", text, flags=re.M)
        order = list(dict.fromkeys(speakers))
        assert order == [str(i) for i in range(1, len(order) + 1)]  # numbered by first appearance
        speaker_counts.add(len(order))
        assert len(text) <= 900
    assert speaker_counts == {2, 3, 4}
    assert 250 <= dialogues.str.len().mean() <= 450


def test_masks_are_known_and_present_where_a_scenario_needs_them(labelled: pd.DataFrame) -> None:
    text = "\n".join(labelled["dialogue"])
    assert set(re.findall(r"#[A-Za-z]+#", text)) == MASKS
    assert set(re.findall(r"#Person\d#", text)) == {f"#Person{i}#" for i in range(1, 5)}
    bills = labelled[labelled["topic"] == "휴대폰 요금"]["dialogue"]
    assert (
        len(bills) > 0
        and bills.str.contains("#PhoneNumber#").all()
        and bills.str.contains("#DateOfBirth#").all()
    )
    emailed = labelled[labelled["summary"].str.contains("이메일로 알려")]["dialogue"]
    assert len(emailed) > 0 and emailed.str.contains("#Email#").all()


def test_summaries_are_observer_sentences_not_copied_from_the_dialogue(
    sample: dict[str, pd.DataFrame],
) -> None:
    for dialogue, summary in _summaries(sample):
        assert summary not in dialogue
        assert not any(summary in line.split(": ", 1)[1] for line in dialogue.split("\n"))
        tokens = set(re.findall(r"#Person\d#", summary))
        assert tokens and tokens <= set(re.findall(r"#Person\d#", dialogue)), summary
        assert summary.endswith("다.") and 40 <= len(summary) <= 130, summary
        assert not re.search(r"#Person[13]#(는|가|를|와|야)\b|#Person[24]#(은|을|과|아)\b", summary), summary


def test_summary_lengths_and_variety(labelled: pd.DataFrame) -> None:
    lengths = labelled["summary"].str.len()
    assert 40 <= lengths.mean() <= 120
    assert labelled["summary"].nunique() >= 0.95 * len(labelled)  # slot values vary, no template memorizing


def test_test_gold_has_three_different_references(sample: dict[str, pd.DataFrame]) -> None:
    gold = sample["test_gold.csv"]
    assert all(len({r.summary1, r.summary2, r.summary3}) == 3 for r in gold.itertuples())


def test_many_topics_and_disjoint_splits(sample: dict[str, pd.DataFrame], labelled: pd.DataFrame) -> None:
    assert labelled["topic"].nunique() >= 15
    assert set(sample["dev.csv"]["topic"]) == {topic for topic, _ in SCENARIOS}
    splits = [set(sample[n]["dialogue"]) for n in ("train.csv", "dev.csv", "test.csv")]
    assert [len(s) for s in splits] == [SAMPLE_ARGS[k] for k in ("train", "dev", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])


# --- the generator ----------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    args = {"train": 30, "dev": 5, "test": 5}
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_sample(tmp_path / folder, seed=seed, **args)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"seed": 1, "train": -1, "dev": 1, "test": 1}, "--train -1"),
        ({"seed": 1, "train": 1, "dev": 0, "test": 1}, "--dev 0"),
        ({"seed": 1, "train": 1, "dev": 1, "test": 10**6}, "--test 1000000"),
        ({"seed": -3, "train": 1, "dev": 1, "test": 1}, "--seed -3"),
        ({"seed": 1, "train": 100_000, "dev": 100_000, "test": 1}, "at most"),
    ],
)
def test_bad_arguments_are_refused(args: dict[str, int], message: str) -> None:
    with pytest.raises(DialsumError, match=re.escape(message)):
        check_args(**args)


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "file.csv"
    target.write_text("x")
    with pytest.raises(DialsumError, match="not a folder"):
        write_sample(target, seed=1, train=1, dev=1, test=1)


# --- the command ------------------------------------------------------------------------------
def test_cli_writes_the_four_files(tmp_path: Path) -> None:
    result = run_cli(
        "make-sample", "--out", str(tmp_path), "--seed", "3", "--train", "12", "--dev", "4", "--test", "4"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote ") == 4
    assert len(read_table(tmp_path / "train.csv", COLUMNS["train.csv"])) == 12
    assert len(read_table(tmp_path / "test_gold.csv", COLUMNS["test_gold.csv"])) == 4


def test_cli_bad_argument_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run_cli("make-sample", "--out", str(tmp_path), "--dev", "-2")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "--dev -2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "train.csv").exists()
