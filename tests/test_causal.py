"""The causal family: detection, tiny copies, validate's plan, generation, and a QLoRA run end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FAST, GPU, assert_clean_error, device, make_data_dir, plan, run_cli

from dialsum import archs, config, generation, modeling
from dialsum.config import RunOptions
from dialsum.errors import DialsumError
from dialsum.recipe import run_experiment
from dialsum.sections import GenerationSection
from dialsum.validation import describe_plan

SOLAR = Path("configs/experiments/05_solar_10.7b_qlora.yaml")
EXAONE = Path("configs/experiments/06_exaone3.5_2.4b_qlora.yaml")
SMALL = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048}


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma", "exaone", "exaone4"])
def test_decoder_only_models_are_the_causal_family_and_scale_down(model_type):
    full = archs.causal_config(model_type, dict(SMALL))
    assert archs.family_of(full) == "causal"
    tiny = archs.tiny_causal_config(full, 64, 1, 300)
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.vocab_size) == (64, 1, 300)
    assert tiny.num_attention_heads % tiny.num_key_value_heads == 0 and tiny.num_key_value_heads == 1  # 4:1 kept
    assert (tiny.pad_token_id, tiny.bos_token_id, tiny.eos_token_id) == (0, 1, 2)  # the tiny tokenizer's ids
    model = modeling.build_fresh_model(tiny, seed=0)
    assert type(model).__name__.endswith("ForCausalLM")
    assert model(input_ids=torch.tensor([[1, 5, 6]])).logits.shape == (1, 3, 300)


def test_encoder_only_and_unknown_models_are_refused():
    with pytest.raises(DialsumError, match="model type 'bert' is not supported"):
        archs.family_of(archs.causal_config("bert", {}))


def test_validate_shows_what_an_llm_config_needs():
    text = describe_plan("solar", plan(SOLAR.name))
    assert "10,731,524,096 in the model; 10,468,982,784 (98%) stored in 4 bits" in text
    assert "62,914,560 trainable in LoRA adapters" in text  # r 16 on 7 projections x 48 layers
    assert "prompt 896 + summary 128 = 1024 of the model's 4,096 positions" in text
    assert "gate -> gate_proj x48; up -> up_proj x48; down -> down_proj x48" in text
    assert "fits 24 GB" in text and "does not fit" not in text
    exaone = describe_plan("exaone", plan(EXAONE.name))
    assert "2,405,327,360 in the model" in exaone and "of the model's 32,768 positions" in exaone


def test_random_init_keeps_the_full_architecture_with_the_tokenizer_ids():
    p = plan(SOLAR.name, init="random", dev=device())
    assert p.parameters == 10_731_524_096 and p.hf_config.num_hidden_layers == 48
    assert (p.hf_config.pad_token_id, p.hf_config.bos_token_id, p.hf_config.eos_token_id) == (0, 1, 2)


def test_memory_compares_with_this_gpu():
    small_gpu = device(cuda=True, bf16=True, tf32=True, cores=8)
    small_gpu.device_name, small_gpu.total_memory_mb = "Tiny GPU", 8 * 1024
    text = describe_plan("solar", plan(SOLAR.name, dev=small_gpu))
    assert "does not fit this Tiny GPU 8 GB" in text


def test_a_sequence_longer_than_the_positions_cuts_the_prompt(tmp_path):
    ckpt = tmp_path / "short-llama"
    archs.causal_config("llama", {**SMALL, "max_position_embeddings": 512}).save_pretrained(ckpt)
    p = plan(SOLAR.name, sets=[f"model.name={ckpt}"])
    assert p.cfg.tokenizer.encoder_max_len == 384  # 512 - 128 summary tokens
    assert any("exceed the 512 positions" in a and "using a prompt of 384" in a for a in p.adaptations)
    tight = plan(SOLAR.name, sets=[f"model.name={ckpt}", "tokenizer.decoder_max_len=500"])
    assert tight.errors and "leave 12 of the 512 positions" in tight.errors[0]


def test_tiny_causal_lora_adapts_embeddings_and_head_at_full_width():
    p = plan(SOLAR.name, init="tiny", dev=device())
    assert p.cfg.lora.lora_rank == 128 and p.cfg.lora.lora_alpha == 256
    assert {"embed_tokens", "lm_head"} <= set(p.cfg.lora.target_modules)
    assert p.cfg.training.gradient_checkpointing is False
    assert any("paged_adamw_8bit: paging moves optimizer states" in a for a in p.adaptations)
    seq2seq = plan("01_mt5_xlsum_ultimate_korean_qlora.yaml", init="tiny", dev=device())
    assert not any("embeddings and head are random" in a for a in seq2seq.adaptations)


@pytest.mark.parametrize(("supported", "liger", "note"), [
    (True, True, "fused linear cross-entropy for llama replaces the chunked loss"),
    (False, False, "liger-kernel does not patch llama"),
    (None, False, "liger-kernel is not installed"),
])
def test_liger_kernel_on_cuda_only_where_it_applies(monkeypatch, supported, liger, note):
    monkeypatch.setattr(modeling, "liger_supports", lambda model_type: supported)
    p = plan(SOLAR.name, dev=GPU)
    assert p.liger is liger and any(note in a for a in p.adaptations)
    assert not plan(SOLAR.name, dev=device()).liger  # never on the CPU
    assert not plan(SOLAR.name, dev=GPU, sets=["speed.liger_kernel=false"]).liger


def test_remote_code_runs_only_when_the_config_allows_it(tmp_path):
    ckpt = tmp_path / "custom"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({
        "model_type": "acme_lm", "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig",
                                              "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}}))
    proc = run_cli("validate", str(SOLAR), "--set", f"model.name={ckpt}")
    assert proc.returncode == 2 and "model type 'acme_lm' is not built into transformers" in proc.stdout
    assert "set model.trust_remote_code=true" in proc.stdout


@pytest.fixture(scope="module")
def tiny_causal():
    texts = [f"#Person1#: {w} 주세요. #Person2#: 네 {w} 드릴게요." for w in ("커피", "녹차", "주스", "우유")] * 20
    tok = modeling.train_tokenizer(texts, "causal", 150, ["#Person1#", "#Person2#"])
    modeling.add_keep_whole_tokens(tok, ["#Person1#", "#Person2#"])
    full = archs.causal_config("llama", dict(SMALL))
    cfg = archs.tiny_causal_config(full, 64, 2, len(tok))
    cfg.initializer_range = 0.5  # large random weights: outputs that depend on the prompt
    return tok, modeling.build_fresh_model(cfg, seed=3)


@pytest.mark.parametrize("beams", [1, 3])
def test_left_padded_batches_equal_batch_of_one_and_drop_the_prompt(tiny_causal, beams):
    tok, model = tiny_causal
    rng = random.Random(beams)
    prompts = [[tok.bos_token_id] + [rng.randrange(10, len(tok)) for _ in range(rng.randrange(3, 30))]
               for _ in range(9)]
    common = dict(num_beams=beams, max_length=6, min_length=2, no_repeat_ngram_size=2)
    alone = GenerationSection(**common, batch_tokens=64, sort_by_length=False)
    plain = [generation.generate(model, tok, [p], alone, ["<s>", "</s>", "<pad>"])[0] for p in prompts]
    batched = generation.generate(model, tok, prompts, GenerationSection(**common, batch_tokens=400),
                                  ["<s>", "</s>", "<pad>"])
    assert batched == plain and len(set(plain)) > 1
    for p, text in zip(prompts, plain, strict=True):
        new = tok(text, add_special_tokens=False)["input_ids"]
        assert len(new) <= 6 + 2 and new != p[-len(new):]  # the continuation alone, not the prompt


def train_causal(data_dir: Path, run_dir: Path, *extra: str, steps: int = 2) -> dict:
    cfg = config.load(SOLAR, [*FAST, f"data.dir={data_dir}", *extra])
    return run_experiment(cfg, RunOptions(init="tiny", run_dir=run_dir, max_steps=steps))


@pytest.mark.slow
def test_a_causal_qlora_run_scores_dev_during_training_and_predict_reproduces_it(small_data, tmp_path):
    run = tmp_path / "run"
    metrics = train_causal(small_data, run, "training.eval_strategy=steps", "training.eval_steps=1",
                           "training.save_strategy=steps", "training.save_steps=1", "training.logging_steps=1",
                           "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1")
    info = json.loads((run / "model_info.json").read_text())
    assert info["family"] == "causal" and info["four_bit"] and info["adapter"]
    assert metrics["arch"] == "causal" and metrics["best_checkpoint"]
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "eval_final" in e] == [1, 2] and all("eval_loss" in e for e in logged
                                                                          if "eval_final" in e)
    proc = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.csv").read_text(encoding="utf-8") == (run / "submission.csv").read_text(encoding="utf-8")


def test_training_tokens_count_each_causal_position_once(tmp_path):
    data_dir = make_data_dir(tmp_path / "data", 2, 2, 2)
    metrics = train_causal(data_dir, tmp_path / "run", "training.per_device_train_batch_size=2",
                           "training.gradient_accumulation_steps=1", steps=1)
    from dialsum import prompt
    from dialsum.modeling import load_tokenizer

    resolved = config.load(tmp_path / "run" / "config.yaml")
    tok = load_tokenizer(str(tmp_path / "run" / "model"))
    rows = prompt.make_encoder(tok, "causal", resolved).examples(pd.read_csv(data_dir / "train.csv", dtype=str))
    assert metrics["train_tokens"] == sum(len(r["input_ids"]) for r in rows)


def test_a_bad_prompt_template_is_a_clean_error(small_data):
    proc = run_cli("train", str(SOLAR), "--init", "tiny", "--data", str(small_data),
                   "--set", "prompt.template={instruction} only")
    assert_clean_error(proc, "prompt.template: must hold {dialogue} exactly once")


@pytest.mark.slow
def test_tiny_causal_qlora_learns_beyond_the_extractive_baseline(tmp_path):
    """A tiny SOLAR-family model, 4-bit with LoRA, four epochs of the sample on the CPU: it reads the dialogue.
    (One torch thread, as `make test` runs two tests at once; at three epochs it scored 19.7 against the
    baseline's 21.6, at four 25.7.)"""
    data_dir = make_data_dir(tmp_path / "data", 2000, 200, 10)
    cfg = config.load(SOLAR, [f"data.dir={data_dir}", "training.eval_strategy=no", "training.report_to=[none]",
                              "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=1",
                              "training.num_train_epochs=4", "generation.max_length=64",
                              "speed.cpu_threads=1"])  # `make test` runs two tests at once on 2 cores
    metrics = run_experiment(cfg, RunOptions(init="tiny", run_dir=tmp_path / "run"))
    trained, baseline = metrics["dev"]["morpheme"]["final"], metrics["baseline"]["morpheme"]
    assert 10 < baseline < 30
    assert trained > baseline, (trained, baseline)
    preds = pd.read_csv(tmp_path / "run" / "dev_predictions.csv", dtype=str, keep_default_na=False)
    assert preds["summary"].nunique() > len(preds) * 0.5
    assert json.loads((tmp_path / "run" / "model_info.json").read_text())["four_bit"] is True


def test_no_repeat_ngrams_count_the_generated_tokens_only():
    from transformers import NoRepeatNGramLogitsProcessor

    ids = torch.tensor([[5, 6, 5, 7, 8, 5], [1, 2, 3, 5, 6, 5]])  # prompts of 3, then 3 generated tokens
    ours = generation.NewTokensNoRepeatNGram(2, prompt_len=3)(ids, torch.zeros(2, 10))
    theirs = NoRepeatNGramLogitsProcessor(2)(ids, torch.zeros(2, 10))
    assert theirs[0, 6] == float("-inf")  # transformers forbids the prompt's "5 6" after the last 5
    assert torch.isfinite(ours[0]).all()  # the generated "7 8 5" holds no n-gram to repeat
    assert ours[1, 6] == float("-inf") and torch.isfinite(ours[1, torch.arange(10) != 6]).all()  # "5 6" was made


def test_trim_applies_only_to_summaries_cut_by_the_length_limit(tiny_causal):
    tok, model = tiny_causal
    prompts = [[tok.bos_token_id, 10, 11, 12]]
    section = GenerationSection(num_beams=1, max_length=5, trim_unfinished=True)
    model.generation_config.eos_token_id = 2
    cut = generation.generate(model, tok, prompts, section, ["<s>", "</s>", "<pad>"])
    full = generation.generate(model, tok, prompts, section.model_copy(update={"trim_unfinished": False}),
                               ["<s>", "</s>", "<pad>"])
    assert cut == [generation.trim_unfinished(full[0])]


def pretrained_causal_checkpoint(folder: Path, data_dir: Path) -> Path:
    """A local 'pretrained' decoder-only checkpoint as a hub download would give it: an untied head, a
    tokenizer without the mask tokens but with a chat template, a sampling generation_config."""
    from transformers import GenerationConfig

    train = pd.read_csv(data_dir / "train.csv", dtype=str)
    tok = modeling.train_tokenizer(list(train["dialogue"]) + list(train["summary"]), "causal", 400, [])
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    cfg = archs.tiny_causal_config(archs.causal_config("llama", dict(SMALL)), 64, 1, len(tok))
    cfg.tie_word_embeddings = False
    model = modeling.build_fresh_model(cfg, seed=0)
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, eos_token_id=2,
                                               bos_token_id=1, pad_token_id=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_pretrained_causal_checkpoint_trains_its_added_token_rows_and_predict_reproduces(small_data, tmp_path):
    ckpt = pretrained_causal_checkpoint(tmp_path / "ckpt", small_data)
    run = tmp_path / "run"
    cfg = config.load(SOLAR, [*FAST, f"data.dir={small_data}", f"model.name={ckpt}", "generation.num_beams=1"])
    metrics = run_experiment(cfg, RunOptions(init="pretrained", run_dir=run, max_steps=2))
    assert metrics["added_tokens"] == 15  # the competition's mask tokens, new to this vocabulary
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    rows = adapter["trainable_token_indices"]
    assert set(rows) == {"embed_tokens", "lm_head"} and len(rows["lm_head"]) == 15  # the untied head's rows too
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "prompt: the start token, then '<|user|>다음 대화를 요약해줘.\\n\\n<dialogue>" in log  # chat template
    assert not any("chat template" in a for a in metrics["adaptations"])
    proc = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.csv").read_text(encoding="utf-8") == (run / "submission.csv").read_text(encoding="utf-8")


def adapted_lines(stdout: str) -> list[str]:
    return [line.split("adapted      ", 1)[1] for line in stdout.splitlines() if "  adapted      " in line]


def test_validate_shows_every_adaptation_train_makes(small_data, tmp_path):
    """The tiny tokenizer, trained on the data, has no chat template: validate says so, as train records it."""
    sets = [a for s in [*FAST, f"data.dir={small_data}"] for a in ("--set", s)]
    shown = run_cli("validate", str(SOLAR), "--init", "tiny", *sets)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "using prompt.template as plain text" in shown.stdout
    assert f"  tokenizer    trained on {small_data / 'train.csv'}" in shown.stdout
    trained = run_cli("train", str(SOLAR), "--init", "tiny", *sets, "--max-steps", "1", "--run-dir", str(tmp_path / "r"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    recorded = json.loads((tmp_path / "r" / "adaptations.json").read_text(encoding="utf-8"))
    assert adapted_lines(shown.stdout) == recorded
    vocab = json.loads((tmp_path / "r" / "model_info.json").read_text(encoding="utf-8"))["vocab_size"]
    assert f"{small_data / 'train.csv'}, {vocab:,} tokens with the mask tokens" in shown.stdout  # as train built it


def test_validate_reads_a_local_checkpoints_tokenizer(small_data, tmp_path):
    ckpt = pretrained_causal_checkpoint(tmp_path / "ckpt", small_data)
    config_path = ckpt / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config.pop("pad_token", None)
    tok_config.pop("chat_template", None)
    config_path.write_text(json.dumps(tok_config), encoding="utf-8")
    (ckpt / "chat_template.jinja").unlink(missing_ok=True)
    proc = run_cli("validate", str(SOLAR), "--set", f"model.name={ckpt}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = adapted_lines(proc.stdout)
    assert "tokenizer: no padding token; padding with <unk> (padded positions are masked out)" in lines
    assert any("the tokenizer has no chat template; using prompt.template as plain text" in a for a in lines)


def test_validate_says_when_the_tokenizer_cannot_be_known_offline():
    proc = run_cli("validate", str(SOLAR), env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("  tokenizer    "))
    assert "upstage/SOLAR-10.7B-Instruct-v1.0: not local or cached, so what it decides (a causal LM's padding " \
           "token and chat template) is unknown here; train adapts to it when it loads it" in line


def test_validate_refuses_a_prompt_that_leaves_no_room_for_the_dialogue(small_data):
    proc = run_cli("validate", str(SOLAR), "--init", "tiny", "--set", f"data.dir={small_data}",
                   "--set", "tokenizer.encoder_max_len=8", "--set", "prompt.instruction=다음 대화를 세 문장 이내로 요약해줘")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "CANNOT RUN" in proc.stdout and "leaving none for the dialogue" in proc.stdout
