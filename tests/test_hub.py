"""Checkpoint configs from a local directory, the hub cache, or a download (monkeypatched: no network).

    pytest tests/test_hub.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

from dialsum import archs, hub
from dialsum.errors import DialsumError

HUB_ID = "gogamza/kobart-base-v2"  # outside the built-in table


def bart_checkpoint(folder: Path) -> Path:
    """A small BART config, saved the way a hub snapshot holds it."""
    spec = archs.tiny_spec(archs.KNOWN_ARCHS["digit82/kobart-summarization"], 64, 1, 500)
    archs.config_from_spec(spec).save_pretrained(folder)
    return folder


def fake_download(files: dict[str, Path], calls: list[tuple[str, str]]):
    def download(repo_id: str, filename: str, **kwargs):
        calls.append((repo_id, filename))
        if repo_id not in files:
            raise LocalEntryNotFoundError("not cached, and the hub is out of reach")
        return str(files[repo_id] / filename)

    return download


def test_a_hub_id_outside_the_table_resolves_through_the_download(tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download({HUB_ID: bart_checkpoint(tmp_path)}, calls))
    hf_config, source = archs.resolve_hf_config(HUB_ID)
    assert source == "checkpoint config" and hf_config.model_type == "bart" and hf_config.d_model == 64
    assert calls == [(HUB_ID, "config.json")]


def test_the_table_is_the_fallback_for_seed_models_only(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download({}, []))
    hf_config, source = archs.resolve_hf_config("digit82/kobart-summarization")
    assert source == "built-in architecture table" and hf_config.d_model == 768
    with pytest.raises(DialsumError, match=f"model.name='{HUB_ID}': not a local directory"):
        archs.resolve_hf_config(HUB_ID)


def test_a_corrupt_cached_config_is_not_read_as_missing(tmp_path, monkeypatch):
    """A seed model whose cached config.json is truncated must not fall back to the table silently."""
    (tmp_path / "config.json").write_text('{"model_type": "bart", "d_mo', encoding="utf-8")
    monkeypatch.setattr("huggingface_hub.hf_hub_download",
                        fake_download({"digit82/kobart-summarization": tmp_path}, []))
    with pytest.raises(DialsumError, match=r"config.json: not valid JSON \(line 1, column"):
        archs.resolve_hf_config("digit82/kobart-summarization")


def test_a_gated_repository_says_how_to_get_access(monkeypatch):
    def gated(repo_id: str, filename: str, **kwargs):
        import httpx2 as httpx

        request = httpx.Request("HEAD", f"https://huggingface.co/{repo_id}/resolve/main/{filename}")
        raise GatedRepoError("access to this repository is restricted", response=httpx.Response(401, request=request))

    monkeypatch.setattr("huggingface_hub.hf_hub_download", gated)
    with pytest.raises(DialsumError, match="gated repository; accept its terms on the hub and set HF_TOKEN"):
        archs.resolve_hf_config("upstage/SOLAR-10.7B-Instruct-v1.0")


def test_local_directories_are_read_in_place(tmp_path):
    hf_config, source = archs.resolve_hf_config(str(bart_checkpoint(tmp_path / "ckpt")))
    assert source == "checkpoint config" and hf_config.encoder_layers == 1
    (tmp_path / "empty").mkdir()
    assert hub.config_file(str(tmp_path / "empty")) is None
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"d_model": 3}), encoding="utf-8")
    with pytest.raises(DialsumError, match="no model_type; not a transformers model config"):
        archs.resolve_hf_config(str(tmp_path / "ckpt"))


def test_the_offline_message_names_the_variable(monkeypatch):
    monkeypatch.setattr(hub, "offline", lambda: True)
    assert "HF_HUB_OFFLINE=1: nothing is downloaded" in hub.not_found_message("a/b")
    monkeypatch.setattr(hub, "offline", lambda: False)
    assert "not found on the hub" in hub.not_found_message("a/b")


def test_an_unreachable_hub_is_tried_once_then_the_cache_is_used_without_retries(tmp_path):
    """A machine that cannot reach the hub, and has no HF_HUB_OFFLINE: one connection attempt, one warning,
    then the cache only (huggingface_hub alone would retry each file five times, printing `Retrying`)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a local port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-m", "dialsum.cli", "validate",
                           "configs/experiments/01_baseline_kobart_rtx3090.yaml"],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert out.count(f"the Hugging Face hub (127.0.0.1:{port}) cannot be reached") == 1
    assert "using the hub cache only" in out and "Retrying" not in out
    assert "built-in architecture table" in out  # the seed model, from the table, as offline


def test_the_hub_is_probed_only_for_a_hub_name_and_never_longer_than_its_bound(tmp_path, monkeypatch):
    import socket
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(hub, "_probed", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in hub.PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)

    def never_answers(address, timeout=None):
        time.sleep(30)  # a resolver or a route that hangs: the socket's own timeout would not bound it

    monkeypatch.setattr(socket, "create_connection", never_answers)
    monkeypatch.setattr(hub, "PROBE_SECONDS", 0.2)
    hub.use_cache_if_unreachable(str(tmp_path))  # a local checkpoint directory: nothing to ask the hub
    assert not hub._probed and not constants.HF_HUB_OFFLINE
    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.example:abc")  # not a URL: the hub client says so
    hub.use_cache_if_unreachable("org/model")
    assert hub._probed and not constants.HF_HUB_OFFLINE
    monkeypatch.setattr(hub, "_probed", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test, as the switch below sets it
    started = time.monotonic()
    hub.use_cache_if_unreachable("org/model")
    assert time.monotonic() - started < 5 and constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
