"""Architecture table, LoRA target resolution and every adaptation `dialsum validate` reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, EXPERIMENTS, GPU, assert_clean_error, device, plan, run_cli

from dialsum import archs, config, modeling
from dialsum.resolve import plan_experiment


def test_kobart_1280_is_clamped_to_its_positions():
    p = plan("01_baseline_kobart_rtx3090.yaml")
    assert p.cfg.tokenizer.encoder_max_len == 1024
    assert any("tokenizer.encoder_max_len=1280 exceeds the 1026 positions of digit82/kobart-summarization" in a
               and a.endswith("using 1024") for a in p.adaptations)


def test_generic_targets_resolve_per_architecture():
    bart = plan("01_baseline_kobart_rtx3090.yaml")
    assert bart.targets.mapping["q"] == ["q_proj"] and bart.targets.mapping["o"] == ["out_proj"]
    assert bart.cfg.lora.target_modules[:4] == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert bart.targets.matched["q_proj"] == 18  # 6 encoder self + 6 decoder self + 6 cross attentions
    mt5 = plan("01_mt5_xlsum_ultimate_korean_qlora.yaml")
    assert mt5.targets.mapping["wi"] == ["wi_0", "wi_1"]  # gated-gelu: `wi` alone matches nothing
    assert mt5.targets.matched["wi_0"] == 24 and mt5.targets.unmatched == []
    assert any("wi -> wi_0+wi_1" in a for a in mt5.adaptations)


def test_unmatched_target_is_reported_and_all_unmatched_cannot_run():
    p = plan("01_baseline_kobart_rtx3090.yaml", sets=["lora.target_modules=[q, nonexistent]"])
    assert p.targets.unmatched == ["nonexistent"] and p.ok
    assert any("nonexistent match(es) no module" in a for a in p.adaptations)
    bad = plan("01_baseline_kobart_rtx3090.yaml", sets=["lora.target_modules=[nothing_here]"])
    assert not bad.ok and "no name matches" in bad.errors[0]


def test_parameter_counts_match_the_real_checkpoints():
    assert plan("01_mt5_xlsum_ultimate_korean_qlora.yaml").parameters == pytest.approx(582.4e6, rel=1e-3)
    assert plan("01_baseline_kobart_rtx3090.yaml").parameters == pytest.approx(123.86e6, rel=1e-3)
    t5 = plan("02_eenzeenee_t5_rtx3090.yaml")
    assert t5.parameters == pytest.approx(275.6e6, rel=1e-3)
    assert t5.trainable_parameters == t5.parameters  # full fine-tuning


def test_lora_trainable_count_matches_peft():
    import peft

    cfg = config.load("configs/experiments/01_baseline_kobart_rtx3090.yaml", ["model.tiny_d_model=32"])
    p = plan_experiment(cfg, "tiny", GPU, vocab_size=300)
    model = modeling.build_fresh_model(p.hf_config, seed=0)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=p.cfg.lora.lora_rank, target_modules=p.cfg.lora.target_modules))
    _, trainable = modeling.count_parameters(wrapped)
    assert trainable == p.trainable_parameters


def test_hardware_adaptations_on_a_cpu():
    p = plan("02_eenzeenee_t5_rtx3090.yaml", dev=device())
    t = p.cfg.training
    assert (t.bf16, t.tf32, t.dataloader_num_workers, t.dataloader_persistent_workers, t.dataloader_pin_memory) == (
        False, False, 0, False, False)
    text = "\n".join(p.adaptations)
    assert "training.bf16=true" in text and "training.tf32=true" in text
    assert "training.dataloader_num_workers=36" in text
    # every setting the plan turns off is said, not only the ones that looked important
    assert "training.dataloader_persistent_workers=true" in text and "training.dataloader_pin_memory=true" in text
    # torch's fused AdamW kernel runs on the CPU too, and the switch is said like every other
    assert "training.optim=adamw_torch: using its fused CPU kernel, adamw_torch_fused" in text
    assert p.cfg.training.optim == "adamw_torch_fused"


@pytest.mark.parametrize(("optim", "expected", "note"), [
    ("adamw_torch", "adamw_torch_fused", "using its fused CUDA kernel, adamw_torch_fused"),
    ("adafactor", "adafactor", "applies to adamw_torch only; training.optim=adafactor is kept"),
    ("paged_adamw_8bit", "paged_adamw_8bit", "training.optim=paged_adamw_8bit is kept"),
])
def test_fused_adamw_replaces_only_adamw_and_says_so(optim, expected, note):
    p = plan("04_batch_optimization_rtx3090.yaml", sets=[f"training.optim={optim}"])
    assert p.cfg.training.optim == expected
    assert any(note in a for a in p.adaptations), p.adaptations


def test_model_init_in_the_config_holds_unless_init_is_given():
    cfg = config.load("configs/experiments/04_batch_optimization_rtx3090.yaml", ["model.init=tiny"])
    assert plan_experiment(cfg, None, device()).cfg.model.init == "tiny"
    assert plan_experiment(cfg, "random", device()).cfg.model.init == "random"


def test_settings_inert_without_evaluation_are_switched_off_with_a_notice():
    p = plan("03_high_learning_rate_rtx3090.yaml", sets=["training.eval_strategy=no"])
    t, text = p.cfg.training, "\n".join(p.adaptations)
    assert (t.eval_steps, t.early_stopping_patience, t.load_best_model_at_end) == (None, None, False)
    assert "training.eval_steps=100 acts with eval_strategy=steps only" in text
    assert "training.early_stopping_patience=10: no dev evaluation during training" in text
    assert "the last step's model is kept" in text


def test_beam_settings_are_dropped_for_greedy_decoding():
    p = plan("01_mt5_xlsum_ultimate_korean_qlora.yaml", sets=["generation.num_beams=1"])
    g = p.cfg.generation
    assert (g.early_stopping, g.length_penalty) == (False, 1.0)
    assert any("generation.length_penalty=0.7 acts in beam search only" in a for a in p.adaptations)


def test_cpu_threads_capped_at_cores():
    p = plan("04_batch_optimization_rtx3090.yaml", dev=device(cores=2), sets=["speed.cpu_threads=16"])
    assert p.cfg.speed.cpu_threads == 2
    assert any("speed.cpu_threads=16 exceeds the 2 CPU cores; using 2" in a for a in p.adaptations)


def test_workers_capped_at_cores_on_gpu():
    p = plan("02_eenzeenee_t5_rtx3090.yaml", dev=device(cuda=True, bf16=True, tf32=True, cores=8))
    assert p.cfg.training.dataloader_num_workers == 8
    assert any("exceeds the 8 CPU cores; using 8" in a for a in p.adaptations)
    assert p.cfg.training.bf16 and p.cfg.training.tf32 and p.cfg.training.dataloader_pin_memory  # kept on CUDA
    cfg = config.load("configs/experiments/02_eenzeenee_t5_rtx3090.yaml")
    ddp = plan_experiment(cfg, "pretrained", device(cuda=True, cores=8), world_size=4)
    assert ddp.cfg.training.dataloader_num_workers == 2  # each DDP process loads with its own workers
    assert any("4 DDP processes share the 8 CPU cores, each with its own workers; using 2" in a
               for a in ddp.adaptations)


def test_four_bit_without_bitsandbytes_falls_back_to_lora():
    p = plan("01_mt5_xlsum_ultimate_korean_qlora.yaml", dev=device(cuda=True, bnb=False))
    assert not p.four_bit and p.cfg.lora.enabled
    assert any("bitsandbytes is not installed" in a for a in p.adaptations)


def test_tiny_scales_architecture_and_learning_rate():
    p = plan("01_baseline_kobart_rtx3090.yaml", init="tiny", dev=device())
    assert p.hf_config.d_model == 128 and p.hf_config.encoder_layers == 2
    assert p.cfg.training.learning_rate == pytest.approx(6e-5 * 30)
    assert p.cfg.tokenizer.encoder_max_len == 512  # the tiny model's own position limit
    assert any("model.tiny_lr_scale" in a for a in p.adaptations)


def test_tiny_bart_keeps_the_init_std_relative_to_its_width():
    p = plan("04_batch_optimization_rtx3090.yaml", init="tiny", dev=device())
    assert p.hf_config.init_std == pytest.approx(0.02 * (768 / 128) ** 0.5, rel=1e-5)
    assert plan("04_batch_optimization_rtx3090.yaml", init="random", dev=device()).hf_config.init_std == 0.02


def test_random_keeps_the_real_architecture():
    p = plan("04_batch_optimization_rtx3090.yaml", init="random", dev=device())
    assert p.hf_config.d_model == 768 and p.hf_config.vocab_size == 30000
    assert p.cfg.training.learning_rate == 7e-5


def test_untied_lm_head_for_t5_v11_and_mt5():
    spec = archs.tiny_spec(archs.KNOWN_ARCHS["csebuetnlp/mT5_multilingual_XLSum"], 32, 1, 100)
    model = modeling.build_fresh_model(archs.config_from_spec(spec), seed=0)
    assert model.lm_head.weight is not model.shared.weight
    assert not torch.equal(model.lm_head.weight, model.shared.weight)


def test_tokenizer_keeps_mask_tokens_whole():
    texts = ["#Person1#: 안녕하세요. 내일 세 시에 예약하고 싶어요.", "#Person1#은 #Person2#에게 예약을 부탁한다."] * 20
    tok = modeling.train_tokenizer(texts, "bart", 300, ["#Person1#", "#Person2#"])
    modeling.add_keep_whole_tokens(tok, ["#Person1#", "#Person2#", "#Email#"])
    ids = tok("#Person1#은 #Email#에게 예약을 부탁한다.", add_special_tokens=False).input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert "#Person1#" in pieces and "#Email#" in pieces
    assert tok.decode(ids) == "#Person1#은 #Email#에게 예약을 부탁한다."  # no space invented after a mask


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `dialsum validate` over the shipped configs and broken ones: {path: its block of output}."""
    tmp = tmp_path_factory.mktemp("validate")
    broken = {
        "no_target": "model: {name: digit82/kobart-summarization}\nlora: {use_lora: true, target_modules: [zz]}\n",
        "unknown_model": "model: {name: someone/unknown-model}\n",
        "bogus_optim": f"inherit: {CONFIGS / '04_batch_optimization_rtx3090.yaml'}\ntraining: {{optim: adamw_bogus}}\n",
        "missing_package": f"inherit: {CONFIGS / '04_batch_optimization_rtx3090.yaml'}\ntraining: {{optim: galore_adamw}}\n",
    }
    paths = [str(p) for p in EXPERIMENTS]
    for name, text in broken.items():
        (tmp / f"{name}.yaml").write_text(text, encoding="utf-8")
        paths.append(str(tmp / f"{name}.yaml"))
    proc = run_cli("validate", *paths, "--init", "tiny")
    blocks, current = {}, None
    for line in proc.stdout.splitlines():
        if not line.startswith(" "):
            current = next(p for p in paths if line.startswith(f"{p}: "))
            blocks[current] = []
        blocks[current].append(line)
    named = {Path(p).stem: "\n".join(lines) for p, lines in blocks.items()}
    return {"proc": proc, "blocks": named}


def test_validate_cli_reports_all_five(validated):
    assert validated["proc"].returncode == 2  # the broken configs below
    assert "Traceback" not in validated["proc"].stderr
    for path in EXPERIMENTS:
        assert validated["blocks"][path.stem].splitlines()[0].endswith(": OK"), validated["blocks"][path.stem]
    text = "\n".join(validated["blocks"][p.stem] for p in EXPERIMENTS)
    assert "wi -> wi_0 x4, wi_1 x4" in text and "q -> q_proj x6" in text  # tiny: 2 layers


@pytest.mark.parametrize(("name", "needles"), [
    ("no_target", ["no name matches"]),
    ("unknown_model", ["not in the hub cache (HF_HUB_OFFLINE=1"]),
    ("bogus_optim", ["training.optim='adamw_bogus': not an optimizer transformers knows"]),
    ("missing_package", ["training.optim=galore_adamw: cannot run", "galore_torch"]),
])
def test_validate_refuses_what_training_would_refuse(validated, name, needles):
    block = validated["blocks"][name]
    assert block.splitlines()[0].endswith(": CANNOT RUN"), block
    for needle in needles:
        assert needle in block, block


def test_validate_shows_the_clamp_for_the_real_checkpoints():
    from dialsum.validation import describe_plan

    text = describe_plan("kobart", plan("01_baseline_kobart_rtx3090.yaml"))
    assert "encoder_max_len=1280 exceeds the 1026 positions" in text and "q -> q_proj x18" in text


def test_validate_cli_bad_yaml_is_a_clean_error(tmp_path):
    proc = run_cli("train", str(tmp_path / "missing.yaml"), "--init", "tiny")
    assert_clean_error(proc, "config file not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name: digit82/kobart-summarization\ntraining: {learning_rate: 1e-4\n")
    for proc in (run_cli("train", str(broken), "--init", "tiny"), run_cli("validate", str(broken))):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"{broken}:4:1: not valid YAML" in proc.stdout + proc.stderr
        assert "while parsing a flow mapping that starts at line 3" in proc.stdout + proc.stderr


def test_validate_bad_init_is_a_clean_error():
    assert_clean_error(run_cli("validate", str(EXPERIMENTS[0]), "--init", "bogus"), "--init bogus: choose")


def test_cli_usage_errors_have_no_traceback():
    for args in (["nosuch"], ["make-sample", "--train", "abc"], ["train"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "Error:" in proc.stderr


def test_attention_kernel_follows_speed_sdpa():
    spec = archs.tiny_spec(archs.KNOWN_ARCHS["digit82/kobart-summarization"], 32, 1, 100)
    config_ = archs.config_from_spec(spec)
    assert modeling.build_fresh_model(config_, 0, sdpa=True).config._attn_implementation == "sdpa"
    assert modeling.build_fresh_model(config_, 0, sdpa=False).config._attn_implementation == "eager"


def test_console_script_is_installed():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("dialsum")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("validate", "train", "predict", "score", "make-sample", "suite", "report"):
        assert command in proc.stdout


def test_loggers_missing_are_dropped_unknown_are_errors():
    p = plan("04_batch_optimization_rtx3090.yaml", sets=["training.report_to=[tensorboard, wandb]"])
    assert p.cfg.training.report_to == ["tensorboard"]
    assert any("wandb is not installed" in a for a in p.adaptations)
    bad = plan("04_batch_optimization_rtx3090.yaml", sets=["training.report_to=[tensorbord]"])
    assert not bad.ok and "tensorbord" in bad.errors[0]


@pytest.mark.parametrize(("config_file", "sets", "why"), [
    ("05_solar_10.7b_qlora.yaml", [], "a causal LM's summary is part of its one sequence, so off"),
    ("04_batch_optimization_rtx3090.yaml", ["training.group_by_length=false"], "training.group_by_length=false"),
])
def test_sorting_summaries_is_off_where_it_cannot_act(config_file, sets, why):
    p = plan(config_file, sets=["speed.bucket_summaries=true", *sets])
    assert not p.cfg.speed.bucket_summaries
    assert any(a.startswith("speed.bucket_summaries=true") and why in a for a in p.adaptations), p.adaptations
    assert plan("04_batch_optimization_rtx3090.yaml", sets=["speed.bucket_summaries=true"]).cfg.speed.bucket_summaries


def test_tiny_refuses_a_lora_target_the_real_model_refuses():
    """The tiny copy adds its embeddings and head to the targets; the user's own names must still match."""
    sets = ["lora.target_modules=[nosuch_proj]"]
    real = plan("05_solar_10.7b_qlora.yaml", dev=device(), sets=sets)
    tiny = plan("05_solar_10.7b_qlora.yaml", init="tiny", dev=device(), sets=sets)
    assert not real.ok and not tiny.ok
    assert "lora.target_modules=['nosuch_proj']: no name matches" in tiny.errors[0]
    kept = plan("05_solar_10.7b_qlora.yaml", init="tiny", dev=device(), sets=["lora.target_modules=[q, nosuch_proj]"])
    assert kept.ok and kept.targets.unmatched == ["nosuch_proj"]
    assert {"q_proj", "embed_tokens", "lm_head"} <= set(kept.cfg.lora.target_modules)


def test_torch_compile_is_kept_on_cuda_only():
    on_gpu = plan("04_batch_optimization_rtx3090.yaml", sets=["speed.torch_compile=true"])
    assert on_gpu.cfg.speed.torch_compile
    on_cpu = plan("04_batch_optimization_rtx3090.yaml", dev=device(), sets=["speed.torch_compile=true"])
    assert not on_cpu.cfg.speed.torch_compile
    assert any("speed.torch_compile=true: compiling pays off on CUDA only" in a for a in on_cpu.adaptations)
