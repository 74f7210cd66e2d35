"""Reading and checking competition CSVs, normalization, encoding and dynamic padding."""

from __future__ import annotations

import pytest
import torch

from dialsum import data, modeling
from dialsum.errors import DialsumError


def test_normalize_dialogue():
    raw = "#Person1#: 안녕하세요.\\n#Person2#:   네,  반가워요.<br>\r\n\n#Person1#: 좋아요. "
    assert data.normalize_dialogue(raw) == "#Person1#: 안녕하세요.\n#Person2#: 네, 반가워요.\n#Person1#: 좋아요."
    assert data.normalize_summary("  #Person1#은\\n  간다. ") == "#Person1#은 간다."


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_split_good(tmp_path):
    p = write(tmp_path / "train.csv", 'fname,dialogue,summary,topic\nt0,"#Person1#: 가\n#Person2#: 나",요약,주제\n')
    df = data.read_split(p, with_summary=True)
    assert list(df["fname"]) == ["t0"] and df["dialogue"][0] == "#Person1#: 가\n#Person2#: 나"


@pytest.mark.parametrize(("text", "message"), [
    ("fname,dialogue,summary\nt0,,요약\nt1,대화,요약\n", r"empty dialogue in row\(s\) 1 \(fname t0\)"),
    ("fname,dialogue,summary\nt0,대화,\nt1,대화,\n", r"empty summary in row\(s\) 1, 2"),
    ("fname,dialogue\nt0,대화\n", r"missing column\(s\) summary"),
    ("fname,dialogue,summary\nt0,대화,a\nt0,대화,b\n", r"duplicate fname t0"),
    ("", r"the file is empty"),
])
def test_read_split_errors_name_file_and_rows(tmp_path, text, message):
    p = write(tmp_path / "train.csv", text)
    with pytest.raises(DialsumError, match=message) as err:
        data.read_split(p, with_summary=True)
    assert str(p) in str(err.value)


def test_non_utf8_is_an_error(tmp_path):
    p = tmp_path / "dev.csv"
    p.write_bytes("fname,dialogue,summary\nd0,대화,요약\n".encode("cp949"))
    with pytest.raises(DialsumError, match="not UTF-8"):
        data.read_split(p, with_summary=True)


@pytest.fixture(scope="module")
def tokenizers():
    texts = ["summarize: #Person1#: 안녕하세요. 내일 세 시에 두 명 예약할게요.", "#Person1#은 내일 세 시에 예약한다."] * 30
    out = {}
    for family in ("bart", "t5"):
        tok = modeling.train_tokenizer(texts, family, 200, ["#Person1#"])
        modeling.add_keep_whole_tokens(tok, ["#Person1#"])
        out[family] = tok
    return out


def test_encoder_adds_family_markers_and_truncates(tokenizers):
    bart = data.Encoder(tokenizers["bart"], "bart", "", encoder_max_len=8, decoder_max_len=5)
    ids = bart.inputs(["#Person1#: 안녕하세요. 내일 세 시에 두 명 예약할게요."])[0]
    tok = tokenizers["bart"]
    assert len(ids) == 8 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    label = bart.labels(["#Person1#은 내일 세 시에 예약한다."])[0]
    assert len(label) == 5 and label[-1] == tok.eos_token_id and tok.bos_token_id not in label
    t5 = data.Encoder(tokenizers["t5"], "t5", "summarize: ", encoder_max_len=64, decoder_max_len=64)
    ids = t5.inputs(["#Person1#: 안녕하세요."])[0]
    assert ids[-1] == tokenizers["t5"].eos_token_id
    assert tokenizers["t5"].decode(ids[:-1]).startswith("summarize:")


def test_collator_pads_to_the_batch_longest_only():
    collate = data.Seq2SeqCollator(pad_id=3)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [8, 1]}, {"input_ids": [5], "labels": [9, 9, 1]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100], [9, 9, 1]]
    assert batch["input_ids"].dtype == torch.long
    unlabelled = data.Seq2SeqCollator(pad_id=0)([{"input_ids": [1, 2, 3]}])
    assert unlabelled["input_ids"].shape == (1, 3) and "labels" not in unlabelled


def test_padding_efficiency():
    assert data.padding_efficiency([[4, 4], [2, 2]]) == 1.0
    assert data.padding_efficiency([[4, 2]]) == pytest.approx(6 / 8)


def test_length_buckets_cover_all_and_pad_little():
    import random

    rng = random.Random(0)
    lengths = [rng.randrange(20, 400) for _ in range(500)]
    sampler = data.LengthBucketSampler(lengths, batch_size=16, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(500)) and len(sampler) == 500
    batches = [[lengths[i] for i in first[k : k + 16]] for k in range(0, 500, 16)]
    shuffled = [lengths[k : k + 16] for k in range(0, 500, 16)]
    assert data.padding_efficiency(batches) > 0.95 > data.padding_efficiency(shuffled)
    second = list(sampler)  # the next epoch: another order, same examples
    assert second != first and sorted(second) == sorted(first)
    firsts = [lengths[b[0]] for b in [first[k : k + 16] for k in range(0, 500, 16)]]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # batch order is shuffled
    sampler.set_epoch(0)
    assert list(sampler) == first  # an epoch's order is reproducible (resume)


def test_length_buckets_pad_labels_too_with_the_same_batches():
    import random

    rng = random.Random(1)
    lengths = [rng.randrange(20, 400) for _ in range(640)]
    labels = [rng.randrange(5, 120) for _ in range(640)]  # independent of the inputs, as summaries nearly are
    plain = data.LengthBucketSampler(lengths, batch_size=16, seed=3).batches()
    both = data.LengthBucketSampler(lengths, batch_size=16, seed=3, label_lengths=labels).batches()
    assert sorted(i for b in both for i in b) == list(range(640))
    assert [len(b) for b in both] == [16] * 40  # the micro-batch is what the config says
    def efficiency(batches, lens):
        return data.padding_efficiency([[lens[i] for i in b] for b in batches])
    assert efficiency(both, labels) > efficiency(plain, labels) + 0.1
    assert efficiency(both, lengths) > 0.9
    def padded(batches):  # what a step pads: its widest input plus its widest label, per row
        return sum(len(b) * (max(lengths[i] for i in b) + max(labels[i] for i in b)) for b in batches)
    assert padded(both) < padded(plain)
    with pytest.raises(ValueError, match="3 label lengths for 640"):
        data.LengthBucketSampler(lengths, 16, label_lengths=[1, 2, 3])
