"""Causal prompts: the loss covers exactly the summary and its end token, mask tokens stay whole, long
dialogues are cut (never the template or the summary), chat templates wrap the user turn."""

from __future__ import annotations

import pandas as pd
import pytest

from dialsum import config, modeling, prompt
from dialsum.errors import DialsumError
from dialsum.generation import finish_summary, trim_unfinished
from dialsum.sections import PromptSection

MASKS = ["#Person1#", "#Person2#"]
TEXTS = [f"#Person1#: {w} 주세요. #Person2#: 네 {w} 드릴게요. 요약: 다음 대화" for w in ("커피", "녹차", "주스")] * 30


@pytest.fixture(scope="module")
def tok():
    tokenizer = modeling.train_tokenizer(TEXTS, "causal", 200, MASKS)
    modeling.add_keep_whole_tokens(tokenizer, MASKS)
    return tokenizer


def encoder(tok, prompt_max=64, summary_max=16, **prompt_kw) -> prompt.CausalEncoder:
    return prompt.CausalEncoder(tok, PromptSection(chat_template=False, **prompt_kw), prompt_max, summary_max)


def test_labels_cover_exactly_the_summary_and_the_end_token(tok):
    enc = encoder(tok)
    df = pd.DataFrame({"dialogue": ["#Person1#: 커피 주세요.\n#Person2#: 네."], "summary": ["#Person1#이 커피를 주문한다."]})
    (row,) = enc.examples(df)
    summary = tok("#Person1#이 커피를 주문한다.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(row["input_ids"]) - len(summary)
    assert row["labels"] == [-100] * n_prompt + summary
    assert row["input_ids"][n_prompt:] == summary and row["input_ids"][0] == tok.bos_token_id
    assert row["input_ids"][:n_prompt] == enc.inputs(list(df["dialogue"]))[0]  # generation sees the same prompt
    person1 = tok.convert_tokens_to_ids("#Person1#")
    assert row["input_ids"].count(person1) == 2 and summary.count(person1) == 1  # whole, in prompt and summary


def test_a_long_dialogue_is_cut_but_the_template_and_the_summary_are_kept(tok):
    enc = encoder(tok, prompt_max=24, summary_max=6)
    long = " ".join(["#Person1#: 커피 주세요."] * 40)
    (ids,) = enc.inputs([long])
    head, tail = enc.pieces()
    assert len(ids) == 24 and ids[: len(head)] == head and ids[-len(tail):] == tail
    (row,) = enc.examples(pd.DataFrame({"dialogue": [long], "summary": ["녹차 " * 20]}))
    assert row["labels"][-1] == tok.eos_token_id and sum(x != -100 for x in row["labels"]) == 6


def test_a_prompt_with_no_room_for_the_dialogue_is_refused(tok):
    with pytest.raises(DialsumError, match="encoder_max_len=4: the prompt's instruction and template take"):
        encoder(tok, prompt_max=4).inputs(["#Person1#: 커피"])


def test_the_chat_template_wraps_the_user_turn_with_the_system_message():
    chat = modeling.train_tokenizer(TEXTS, "causal", 200, MASKS)
    chat.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}[assistant]{% endif %}")
    section = PromptSection(instruction="요약해.", system="너는 요약가다.")
    text = prompt.CausalEncoder(chat, section, 64, 8).prompt_text("대화")
    assert text == "[system]너는 요약가다.\n[user]요약해.\n\n대화\n\n요약:\n[assistant]"
    plain = prompt.CausalEncoder(chat, PromptSection(chat_template=False), 64, 8).prompt_text("대화")
    assert plain == "다음 대화를 요약해줘.\n\n대화\n\n요약:"


def test_a_chat_template_that_refuses_the_prompt_is_a_clean_error():
    chat = modeling.train_tokenizer(TEXTS, "causal", 200, MASKS)
    chat.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                          "supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    enc = prompt.CausalEncoder(chat, PromptSection(system="너는 요약가다."), 64, 8)
    with pytest.raises(DialsumError, match="System role not supported.*leave prompt.system empty"):
        enc.dialogue_budget()


def test_chat_template_and_padding_adapt_to_the_tokenizer(tok):
    cfg = config.validate_dict({"model": {"name": "x"}})
    notes: list[str] = []
    prompt.adapt_chat_template(cfg, tok, notes)
    assert cfg.prompt.chat_template is False and "has no chat template" in notes[0]
    bare = modeling.train_tokenizer(TEXTS, "causal", 200, MASKS)
    bare.pad_token = None
    prompt.adapt_padding(bare, notes)
    assert bare.pad_token == "<unk>" and "no padding token; padding with <unk>" in notes[1]


def test_templates_need_the_dialogue_slot_once():
    with pytest.raises(DialsumError, match=r"prompt.template: must hold \{dialogue\} exactly once"):
        config.validate_dict({"model": {"name": "x"}, "prompt": {"template": "{instruction}"}})
    with pytest.raises(DialsumError, match=r"unknown placeholder \{turns\}"):
        config.validate_dict({"model": {"name": "x"}, "prompt": {"template": "{dialogue} {turns}"}})


@pytest.mark.parametrize(("text", "trimmed"), [
    ("#Person1#이 커피를 주문한다. #Person2#가", "#Person1#이 커피를 주문한다."),
    ("커피를 주문한다.", "커피를 주문한다."),
    ("가격은 3.5 달러이고", "가격은 3.5 달러이고"),  # no sentence end: kept whole
    ("왔다! 그리고 갔다? 그런데", "왔다! 그리고 갔다?"),
])
def test_trim_unfinished_cuts_after_the_last_sentence_end(text, trimmed):
    assert trim_unfinished(text) == trimmed
    assert finish_summary(text + "</s><pad>", ["</s>", "<pad>"], trim=True) == trimmed
    assert finish_summary(text + "</s>", ["</s>"], trim=False) == text
