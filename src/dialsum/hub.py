"""Where a checkpoint's config comes from: a local directory, the hub cache, or a download.

    dialsum validate CONFIG --set model.name=gogamza/kobart-base-v2     # downloads config.json when online
    HF_HUB_OFFLINE=1 dialsum validate configs/experiments/*.yaml         # the hub cache only
    pytest tests/test_hub.py

`checkpoint_config(name)` resolves `config.json` the way transformers does, through huggingface_hub:
a local directory is read in place; a hub id is taken from the cache or downloaded, honouring
`HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE` and `HF_TOKEN`. Only "this file is not there" (no such
directory or repository, no cached copy while offline or unreachable) returns None, so that the
caller may fall back to the built-in architecture table; a gated repository or a config.json that
is not valid JSON is an error that names the file.

Before a process first asks the hub for a file, `use_cache_if_unreachable` tries one connection to the hub's
address (`HF_ENDPOINT`, or huggingface.co): a machine that cannot reach it then uses the hub cache only, as
`HF_HUB_OFFLINE=1` does, and says so once, instead of huggingface_hub's five retries of every file (about
25 seconds each, twice for a config's validation). Where a proxy is set, the hub is asked as usual.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dialsum.errors import DialsumError
from dialsum.fileio import read_json

CONFIG_NAME = "config.json"
PROBE_SECONDS = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
log = logging.getLogger("dialsum")
_probed = False


def use_cache_if_unreachable(name: str) -> None:
    """Before checkpoint `name` is asked of the hub (a local directory never is), once per process: when the
    hub is not already off (HF_HUB_OFFLINE), no proxy is set and its address is not connected to within
    PROBE_SECONDS, the name lookup included, switch this process, and those it starts, to the hub cache only
    (in a notebook: for the rest of its kernel), with one warning."""
    global _probed
    if _probed or Path(name).expanduser().is_dir():
        return
    _probed = True
    from huggingface_hub import constants  # huggingface_hub: only where the hub is asked

    if offline() or any(os.environ.get(var) for var in PROXY_VARIABLES):
        return
    try:
        url = urlsplit(constants.ENDPOINT)
        address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    except ValueError:  # not a URL: the hub client names it when it is used
        return
    if not address[0]:
        return
    problem = _unreachable(address)
    if problem:
        constants.HF_HUB_OFFLINE = True  # huggingface_hub and transformers read it at each request
        os.environ["HF_HUB_OFFLINE"] = "1"
        log.warning("the Hugging Face hub (%s:%d) cannot be reached (%s): using the hub cache only, as "
                    "HF_HUB_OFFLINE=1 does", *address, problem)


def _unreachable(address: tuple[str, int]) -> str | None:
    """Why one connection to `address` failed within PROBE_SECONDS (its name lookup included, which a socket
    timeout does not bound, hence the thread), or None once it connects."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or type(err).__name__)

    worker = threading.Thread(target=connect, name="dialsum-hub-probe", daemon=True)
    worker.start()
    worker.join(PROBE_SECONDS)
    return outcome[0] if outcome else f"no answer within {PROBE_SECONDS:g} s"


def config_file(name: str) -> Path | None:
    """The checkpoint's config.json on disk (downloaded if need be), or None when there is none."""
    from huggingface_hub import hf_hub_download  # huggingface_hub: only where the hub is asked
    from huggingface_hub.errors import (  # huggingface_hub: deferred, as above
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = Path(name).expanduser()
    if local.is_dir():
        path = local / CONFIG_NAME
        return path if path.is_file() else None
    use_cache_if_unreachable(name)
    try:
        return Path(hf_hub_download(repo_id=name, filename=CONFIG_NAME))
    except GatedRepoError:
        raise DialsumError(
            f"model.name={name!r}: a gated repository; accept its terms on the hub and set HF_TOKEN "
            "(or `hf auth login`)"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError, HFValidationError):
        return None  # no such repository or file, no cached copy (offline or unreachable), not an id


def read_config_json(path: Path) -> dict[str, Any]:
    """The parsed config.json; a truncated or non-JSON file is an error naming it and the line."""
    data = read_json(path, "re-download or repair the checkpoint")
    if not isinstance(data, dict) or "model_type" not in data:
        raise DialsumError(f"{path}: no model_type; not a transformers model config")
    return data


def checkpoint_config(name: str, trust_remote_code: bool = False) -> Any | None:
    """The transformers config of checkpoint `name`, or None when no config.json can be found.

    A model type that transformers does not know runs the checkpoint's own code only when
    `trust_remote_code` is set (the experiment's `model.trust_remote_code`)."""
    import transformers as tf  # transformers takes seconds to import: only where it is used

    path = config_file(name)
    if path is None:
        return None
    data = read_config_json(path)
    try:
        return tf.AutoConfig.from_pretrained(path.parent, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as err:
        if data.get("auto_map") and not trust_remote_code:
            raise DialsumError(
                f"{path}: model type {data['model_type']!r} is not built into transformers and needs the "
                "checkpoint's own code; read that code, then set model.trust_remote_code=true"
            ) from None
        raise DialsumError(
            f"{path}: transformers cannot read this config ({str(err).splitlines()[0][:160]}); "
            "upgrade transformers or use another checkpoint"
        ) from None


def offline() -> bool:
    """True when huggingface_hub will not download (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    from huggingface_hub import constants  # huggingface_hub: deferred, as above

    return constants.is_offline_mode()


def not_found_message(name: str) -> str:
    """Why `name` could not be resolved, and what to do, for a one-line error."""
    where = "not a local directory with config.json"
    if offline():
        return (f"model.name={name!r}: {where}, and not in the hub cache (HF_HUB_OFFLINE=1: nothing is "
                "downloaded); run once online, or point model.name at a local checkpoint directory")
    return (f"model.name={name!r}: {where}, and not found on the hub (check the id and your connection; "
            "a private model needs HF_TOKEN)")
