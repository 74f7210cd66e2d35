"""Config schema: every shipped YAML loads, each validator fails and passes, errors all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import EXPERIMENTS

from dialsum import config
from dialsum.errors import DialsumError


def write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def base(**sections: dict) -> dict:
    data = {"model": {"name": "digit82/kobart-summarization"}}
    data.update(sections)
    return data


def test_the_five_seed_experiments_and_the_two_llms_ship_and_load():
    assert [p.name for p in EXPERIMENTS] == sorted([
        "01_mt5_xlsum_ultimate_korean_qlora.yaml", "02_eenzeenee_t5_rtx3090.yaml",
        "01_baseline_kobart_rtx3090.yaml", "03_high_learning_rate_rtx3090.yaml",
        "04_batch_optimization_rtx3090.yaml", "05_solar_10.7b_qlora.yaml", "06_exaone3.5_2.4b_qlora.yaml",
    ])
    for path in EXPERIMENTS:
        cfg = config.load(path)
        assert cfg.data.dir == "data/sample"  # inherited from base.yaml
        assert path.read_text(encoding="utf-8").startswith("#"), "each experiment opens with a comment"


@pytest.mark.parametrize(("name", "expected"), [
    ("01_mt5_xlsum_ultimate_korean_qlora.yaml", dict(
        micro=32, eval=48, accum=2, eff=64, lr=8e-5, epochs=6, sched="cosine_with_restarts", warm=0.02,
        wd=1e-4, rank=128, alpha=256, beams=12, maxlen=200, minlen=15, lp=0.7, nrng=3)),
    ("02_eenzeenee_t5_rtx3090.yaml", dict(micro=20, eval=32, accum=2, eff=40, lr=8e-5, epochs=5, warm=0.03, wd=1e-3)),
    ("01_baseline_kobart_rtx3090.yaml", dict(micro=16, eval=24, accum=3, eff=48, lr=6e-5, rank=192, alpha=384)),
    ("03_high_learning_rate_rtx3090.yaml", dict(micro=14, accum=4, eff=56, lr=1.2e-4, warm=0.01)),
    ("04_batch_optimization_rtx3090.yaml", dict(micro=16, eval=24, accum=4, eff=64, lr=7e-5, epochs=5)),
    # the public SOLAR write-ups: batch 2 x 4, lr 1e-4 cosine, LoRA r 16 / alpha 32 / dropout 0.05
    ("05_solar_10.7b_qlora.yaml", dict(micro=2, accum=4, eff=8, lr=1e-4, sched="cosine", rank=16, alpha=32)),
    ("06_exaone3.5_2.4b_qlora.yaml", dict(micro=8, accum=1, eff=8, lr=2e-4, sched="cosine", rank=16, alpha=32)),
])
def test_seed_numbers_are_kept(name: str, expected: dict):
    cfg = config.load(Path("configs/experiments") / name)
    t, lora, gen = cfg.training, cfg.lora, cfg.generation
    actual = dict(micro=t.per_device_train_batch_size, eval=t.per_device_eval_batch_size,
                  accum=t.gradient_accumulation_steps, eff=cfg.effective_batch, lr=t.learning_rate,
                  epochs=t.num_train_epochs, sched=t.lr_scheduler_type, warm=t.warmup_ratio, wd=t.weight_decay,
                  rank=lora.lora_rank, alpha=lora.lora_alpha, beams=gen.num_beams, maxlen=gen.max_length,
                  minlen=gen.min_length, lp=gen.length_penalty, nrng=gen.no_repeat_ngram_size)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value), key


def test_seed_specific_settings():
    high = config.load("configs/experiments/03_high_learning_rate_rtx3090.yaml").training
    assert (high.max_grad_norm, high.early_stopping_patience, high.save_steps, high.logging_steps,
            high.save_total_limit) == (0.3, 10, 100, 25, 10)
    mt5 = config.load("configs/experiments/01_mt5_xlsum_ultimate_korean_qlora.yaml")
    assert mt5.lora.use_qlora and mt5.lora.load_in_4bit and mt5.lora.lora_dropout == 0.01
    assert mt5.tokenizer.prefix == "dialogue summarization in korean: "
    assert mt5.lora.target_modules == ["q", "k", "v", "o", "wi", "wo", "lm_head", "embed_tokens"]
    kobart = config.load("configs/experiments/01_baseline_kobart_rtx3090.yaml")
    assert kobart.tokenizer.encoder_max_len == 1280  # kept as written; clamped at validation time
    t5 = config.load("configs/experiments/02_eenzeenee_t5_rtx3090.yaml").training
    assert t5.dataloader_num_workers == 36 and t5.bf16 and t5.tf32 and not t5.gradient_checkpointing
    batch = config.load("configs/experiments/04_batch_optimization_rtx3090.yaml").training
    assert batch.group_by_length and batch.dataloader_num_workers == 36


def test_unknown_key_has_a_hint(tmp_path):
    path = write(tmp_path, base(training={"learning_rat": 1e-4}))
    with pytest.raises(DialsumError, match=r"training\.learning_rat: unknown key; did you mean learning_rate\?"):
        config.load(path)


def test_all_errors_reported_at_once(tmp_path):
    path = write(tmp_path, base(
        training={"per_device_train_batch_size": 0, "lr_scheduler_type": "cosine_restarts"},
        lora={"lora_dropout": 1.5},
    ))
    with pytest.raises(DialsumError) as err:
        config.load(path)
    text = str(err.value)
    assert "3 problems" in text
    for key in ("training.per_device_train_batch_size", "training.lr_scheduler_type", "lora.lora_dropout"):
        assert key in text


def test_missing_model_name(tmp_path):
    with pytest.raises(DialsumError, match=r"model: required"):
        config.load(write(tmp_path, {"training": {"learning_rate": 1e-4}}))


def test_flat_seed_keys_are_routed_to_sections(tmp_path):
    path = write(tmp_path, {"model": {"name": "x"}, "learning_rate": 3e-5, "generation_num_beams": 7,
                            "lora_rank": 8, "encoder_max_len": 256, "evaluation_strategy": "epoch"})
    cfg = config.load(path)
    assert cfg.training.learning_rate == 3e-5
    assert cfg.generation.num_beams == 7
    assert cfg.lora.lora_rank == 8
    assert cfg.tokenizer.encoder_max_len == 256
    assert cfg.training.eval_strategy == "epoch"


def test_unknown_flat_key(tmp_path):
    with pytest.raises(DialsumError, match=r"generation_num_beam: unknown key; did you mean generation_num_beams"):
        config.load(write(tmp_path, {"model": {"name": "x"}, "generation_num_beam": 3}))


def test_inherit_merges_and_aliases_override(tmp_path):
    write(tmp_path, base(generation={"num_beams": 4, "max_length": 50}), "parent.yaml")
    child = write(tmp_path, {"inherit": "parent.yaml", "generation": {"generation_num_beams": 9}}, "child.yaml")
    cfg = config.load(child)
    assert cfg.generation.num_beams == 9 and cfg.generation.max_length == 50
    assert cfg.experiment.name == "child"


def test_inherit_loop_is_an_error(tmp_path):
    write(tmp_path, {"inherit": "b.yaml"}, "a.yaml")
    write(tmp_path, {"inherit": "a.yaml"}, "b.yaml")
    with pytest.raises(DialsumError, match="inherit loop"):
        config.load(tmp_path / "a.yaml")


def test_overrides(tmp_path):
    path = write(tmp_path, base())
    cfg = config.load(path, ["training.learning_rate=1e-4", "generation_num_beams=3", "lora.use_lora=true",
                             "training.report_to=[none]", "training.eval_strategy=no"])
    assert cfg.training.learning_rate == 1e-4
    assert cfg.generation.num_beams == 3
    assert cfg.lora.use_lora is True
    assert cfg.training.report_to == ["none"]
    assert cfg.training.eval_strategy == "no"  # YAML's bare `no` is false; accepted as "no"
    with pytest.raises(DialsumError, match="expected section.key=value"):
        config.load(path, ["training.learning_rate"])
    with pytest.raises(DialsumError, match="did you mean"):
        config.load(path, ["learning_rat=1"])


@pytest.mark.parametrize(("sections", "message"), [
    ({"training": {"eval_strategy": "steps"}}, "needs training.eval_steps"),
    ({"training": {"eval_strategy": "steps", "eval_steps": 10, "save_strategy": "epoch"}},
     "save_strategy=epoch must equal eval_strategy=steps"),
    ({"training": {"eval_strategy": "steps", "eval_steps": 30, "save_strategy": "steps", "save_steps": 100}},
     "must be a multiple of eval_steps"),
    ({"lora": {"load_in_4bit": True}}, "needs lora.use_qlora=true"),
    ({"lora": {"use_qlora": True, "load_in_4bit": False}}, "use_qlora=true means LoRA over a 4-bit model"),
    ({"generation": {"min_length": 50, "max_length": 20}}, "min_length=50 exceeds max_length=20"),
    ({"training": {"warmup_ratio": 1.0}}, r"training.warmup_ratio=1.0: Input should be less than 1"),
    ({"training": {"max_steps": 0}}, "training.max_steps=0 trains nothing"),
    ({"training": {"max_steps": -3}}, "training.max_steps=-3: Input should be greater than or equal to -1"),
    ({"training": {"metric_for_best_model": "bleu"}},
     "training.metric_for_best_model='bleu': Input should be 'final', 'rouge1', 'rouge2', 'rougeL' or 'loss'"),
])
def test_cross_field_validators(tmp_path, sections, message):
    with pytest.raises(DialsumError, match=message):
        config.load(write(tmp_path, base(**sections)))


def test_cross_field_validators_pass_when_consistent(tmp_path):
    cfg = config.load(write(tmp_path, base(
        training={"eval_strategy": "steps", "eval_steps": 50, "save_strategy": "steps", "save_steps": 100},
        lora={"use_qlora": True, "load_in_4bit": True},
        generation={"min_length": 10, "max_length": 20},
    )))
    assert cfg.lora.enabled and cfg.training.save_steps == 100


def test_values_validation_accepts_mean_what_they_say(tmp_path):
    cfg = config.load(write(tmp_path, base(
        training={"warmup_ratio": 0.99, "max_steps": -1, "metric_for_best_model": "eval_rouge1"},
        lora={"use_qlora": True},
    )))
    assert cfg.training.metric_for_best_model == "rouge1"  # transformers' eval_ spelling, normalized
    assert cfg.lora.load_in_4bit  # QLoRA is LoRA over a 4-bit model


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: x\ntraining: [unclosed\n", encoding="utf-8")
    with pytest.raises(DialsumError, match=rf"{bad}:4:1: not valid YAML: expected .*starts at line 3"):
        config.load(bad)
    with pytest.raises(DialsumError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load("configs/experiments/01_mt5_xlsum_ultimate_korean_qlora.yaml")
    again = tmp_path / "resolved.yaml"
    again.write_text(config.to_yaml(cfg), encoding="utf-8")
    assert config.load(again) == cfg


def test_command_line_option_checks():
    assert config.check_init(None) is None and config.check_init("tiny") == "tiny"
    with pytest.raises(DialsumError, match="--init bogus: choose pretrained, random or tiny"):
        config.check_init("bogus")
    for bad in (0, -3):
        with pytest.raises(DialsumError, match=f"--max-steps {bad}: must be at least 1"):
            config.check_max_steps(bad)
    with pytest.raises(DialsumError, match="choose one of them"):
        config.check_max_steps(5, one_epoch=True)


def test_differences_name_each_changed_setting():
    a = config.load("configs/experiments/04_batch_optimization_rtx3090.yaml")
    b = config.load("configs/experiments/04_batch_optimization_rtx3090.yaml",
                    ["model.tiny_d_model=32", "training.learning_rate=1e-3", "training.per_device_train_batch_size=8"])
    keys = ("model", "training.per_device_train_batch_size")
    assert config.differences(a, b, keys) == [
        "model.tiny_d_model: 128 in the run, 32 now", "training.per_device_train_batch_size: 16 in the run, 8 now"]
    assert config.differences(a, a, keys) == []


def test_overrides_read_numbers_yaml_1_1_leaves_as_text(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-4` and `1e3` as strings; `--set` reads them as numbers, so an integer
    setting takes `1e3` (pydantic turns no string into an int)."""
    assert config.parse_override("training.learning_rate=1e-4") == (["training", "learning_rate"], 1e-4)
    cfg = config.load(write(tmp_path, base()), ["training.max_steps=1e3", "training.save_steps=5e2"])
    assert (cfg.training.max_steps, cfg.training.save_steps) == (1000, 500)
    assert config.parse_override("model.name=digit82/kobart-summarization")[1] == "digit82/kobart-summarization"


def test_apply_options_returns_a_new_config_and_leaves_the_given_one(tmp_path):
    cfg = config.load(write(tmp_path, base()))
    applied = config.apply_options(cfg, config.RunOptions(init="tiny", max_steps=7))
    assert (applied.model.init, applied.training.max_steps) == ("tiny", 7)
    assert (cfg.model.init, cfg.training.max_steps) == ("pretrained", -1)
    one = config.apply_options(cfg, config.RunOptions(one_epoch=True))
    assert one.training.num_train_epochs == 1 and cfg.training.num_train_epochs == 3
    with pytest.raises(DialsumError, match="--one-epoch and --max-steps: choose one"):
        config.apply_options(cfg, config.RunOptions(one_epoch=True, max_steps=2))


def test_config_help_shows_each_field_from_the_schema():
    from conftest import run_cli

    from dialsum.sections import TrainingSection

    one = run_cli("config", "training.optim")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[:4] == ["training.optim", f"  {TrainingSection.model_fields['optim'].description}",
                                           "  type:     text", "  default:  'adamw_torch'"]
    lr = run_cli("config", "learning_rate").stdout  # a seed-style flat key finds its section
    assert lr.startswith("training.learning_rate") and "allowed:  > 0 and <= 1.0" in lr
    beams = run_cli("config", "generation.generation_num_beams").stdout  # the seed's alias
    assert beams.startswith("generation.num_beams") and "also:     generation_num_beams" in beams
    section = run_cli("config", "training").stdout
    assert section.startswith("[training]") and "training.metric_for_best_model" in section
    assert "one of final, rouge1, rouge2, rougeL, loss" in section
    everything = run_cli("config").stdout
    for name in ("[experiment]", "[model]", "[lora]", "[generation]", "[speed]", "[tune]"):
        assert name in everything
    suite = run_cli("config", "--suite", "settings.gpu_wait_max_used_mb").stdout
    assert "Smart wait" in suite and "default:  2048" in suite and "allowed:  >= 0" in suite


def test_config_help_for_an_unknown_key_is_one_line_with_a_hint():
    from conftest import assert_clean_error, run_cli

    proc = run_cli("config", "training.optm")
    assert_clean_error(proc, "dialsum config training.optm: no such experiment config section or key",
                       "did you mean training.optim?")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert_clean_error(run_cli("config", "--suite", "setings"), "no such suite file section or key",
                       "did you mean settings?")
