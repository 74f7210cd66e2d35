"""Experiment configuration files: YAML inheritance, flat seed-style keys, `--set` overrides, one-line errors.

    dialsum validate configs/experiments/*.yaml
    dialsum train configs/experiments/01_baseline_kobart_rtx3090.yaml --set training.learning_rate=1e-4

An experiment YAML may name a parent with `inherit: ../base.yaml`; its keys are merged over the
parent's. Keys may be written in their section (`training: {learning_rate: ...}`) or flat at the top
level with the seed's names (`learning_rate: ...`, `generation_num_beams: ...`): flat keys are moved to
the section that owns them. Unknown keys are errors with a "did you mean" hint, and every problem of a
file is reported at once. The schema itself is `dialsum.sections`.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, ValidationError

from dialsum.errors import DialsumError
from dialsum.sections import INITS, SECTIONS, ExperimentConfig, Section


def _aliases(section: type[Section]) -> dict[str, str]:
    """Every accepted key of a section (field names and the seed's aliases) -> its field name."""
    keys = {name: name for name in section.model_fields}
    for name, field in section.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            keys.update({str(c): name for c in field.validation_alias.choices})
    return keys


SECTION_ALIASES = {name: _aliases(cls) for name, cls in SECTIONS.items()}
SECTION_KEYS = {name: set(keys) for name, keys in SECTION_ALIASES.items()}


def _canonical(section: str, values: dict) -> dict:
    aliases = SECTION_ALIASES[section]
    return {aliases.get(k, k): v for k, v in values.items()}


SEARCH_SECTIONS = ("tune", "sweep")


def owner_section(key: str) -> str | None:
    """The section a flat key belongs to; `tune` and `sweep` repeat other sections' names (generation's, training's
    and lora's), so flat keys never go there."""
    owners = [name for name, keys in SECTION_KEYS.items() if key in keys and name not in SEARCH_SECTIONS]
    return owners[0] if len(owners) == 1 else None


def _hint(key: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def deep_merge(base: dict, delta: dict) -> dict:
    """Merge `delta` over `base` recursively (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml_mapping(path: Path, what: str, shape: str) -> dict:
    """A YAML file whose top level is a mapping; every problem is one line naming the file."""
    if not path.is_file():
        raise DialsumError(f"{path}: {what} file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise DialsumError(f"{path}: not UTF-8 text; re-save the file as UTF-8") from None
    except yaml.MarkedYAMLError as err:
        raise DialsumError(f"{path}{_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise DialsumError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DialsumError(f"{path}: expected {shape}")
    return data


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """`:4:1: not valid YAML: expected ',' or '}' (while parsing a flow mapping that starts at line 3)`."""
    mark = err.problem_mark or err.context_mark
    where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
    problem = err.problem or "syntax error"
    context = ""
    if err.context:
        starts = f" that starts at line {err.context_mark.line + 1}" if err.context_mark else ""
        context = f" ({err.context}{starts})"
    return f"{where}: not valid YAML: {problem}{context}; fix the file there"


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in chain:
        raise DialsumError(f"{path}: inherit loop through {' -> '.join(str(p) for p in chain)}")
    data = read_yaml_mapping(path, "config", "a mapping of sections at the top level")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    base = _read_yaml((path.parent / str(parent)).resolve(), chain + (path.resolve(),))
    return deep_merge(_route_flat_keys(base, path), _route_flat_keys(data, path))


def _route_flat_keys(data: dict, path: Path | str) -> dict:
    """Move top-level seed-style keys (`learning_rate: ...`) into the section that owns them."""
    out: dict[str, Any] = {}
    problems = []
    for key, value in data.items():
        if key in SECTIONS:
            value = _canonical(key, value) if isinstance(value, dict) else value
            out[key] = deep_merge(out.get(key, {}), value) if isinstance(value, dict) else value
            continue
        owner = owner_section(key)
        if owner is None:
            every = set(SECTIONS).union(*SECTION_KEYS.values())
            problems.append(f"{key}: unknown key{_hint(key, every)}")
            continue
        out.setdefault(owner, {})[SECTION_ALIASES[owner][key]] = value
    if problems:
        raise DialsumError(format_problems(path, problems))
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (["training", "learning_rate"], 0.0001) (YAML-typed value)."""
    if "=" not in text:
        raise DialsumError(f"--set {text}: expected section.key=value, e.g. training.learning_rate=1e-4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise DialsumError(f"--set {text}: empty key; expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = _number_or_text(value)
    return parts, value


def _number_or_text(value: str) -> Any:
    try:
        return float(value) if any(c in value.lower() for c in ".e") else int(value)
    except ValueError:
        return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        if len(parts) == 1:
            owner = owner_section(parts[0])
            if owner is None:
                every = set().union(*SECTION_KEYS.values())
                raise DialsumError(f"--set {text}: unknown key {parts[0]}{_hint(parts[0], every)}")
            parts = [owner, parts[0]]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DialsumError(f"--set {text}: {part} is not a section")
        if len(parts) == 2 and parts[0] in SECTION_ALIASES:
            parts[1] = SECTION_ALIASES[parts[0]].get(parts[1], parts[1])
        node[parts[-1]] = value
    return out


def format_problems(path: Path | str, problems: list[str]) -> str:
    """One problem on one line; several as a counted list under the file name."""
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    return f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def describe_error(err: Any, keys_by_section: dict[str, set[str]], what: str = "config") -> str:
    """One pydantic error as `training.learning_rat: unknown key; did you mean learning_rate?`.

    `keys_by_section` maps a section name ("" for the top level) to the keys it accepts.
    """
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        section = loc[0] if len(loc) > 1 else ""
        return f"{key}: unknown key{_hint(loc[-1], keys_by_section.get(section, set()))}"
    if err["type"] == "missing":
        return f"{key}: required; add it to the {what}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and err["type"] != "value_error":
        return f"{key}={err.get('input')!r}: {msg}"
    return f"{key}: {msg}" if key else msg


def validate_dict(data: dict, source: Path | str = "<config>") -> ExperimentConfig:
    data = _route_flat_keys(data, source)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        keys = {"": set(SECTIONS), **SECTION_KEYS}
        raise DialsumError(format_problems(source, [describe_error(e, keys) for e in err.errors()])) from None


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (with its `inherit` chain), apply `--set` overrides, validate."""
    path = Path(path)
    data = _route_flat_keys(_read_yaml(path), path)
    data = apply_overrides(data, overrides or [])
    cfg = validate_dict(data, path)
    if cfg.experiment.name == "experiment":
        cfg.experiment.name = path.stem
    return cfg


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True, sort_keys=False)


def check_init(init: str | None) -> str | None:
    """`--init` as given (None: the config's model.init), refused unless it is a known source."""
    if init is not None and init not in INITS:
        raise DialsumError(f"--init {init}: choose {', '.join(INITS[:-1])} or {INITS[-1]}")
    return init


def check_max_steps(max_steps: int | None, one_epoch: bool | None = None) -> int | None:
    """`--max-steps` as given (None: train the configured epochs); 0 or less trains nothing."""
    if max_steps is not None and max_steps < 1:
        raise DialsumError(f"--max-steps {max_steps}: must be at least 1; leave it out to train the configured epochs")
    if max_steps is not None and one_epoch:
        raise DialsumError("--one-epoch and --max-steps: choose one of them")
    return max_steps


@dataclass
class RunOptions:
    """`dialsum train`'s options beside the config (the suite passes the same ones to each experiment)."""

    init: str | None = None  # None: the config's model.init
    run_dir: Path | None = None
    max_steps: int | None = None
    one_epoch: bool = False
    resume: bool = False
    submission: bool = True  # False: dev is scored, test is not summarized (a sweep's trials)


def check_options(opts: RunOptions) -> None:
    """--init, --max-steps and --one-epoch as given, refused before any work starts."""
    check_init(opts.init)
    check_max_steps(opts.max_steps, opts.one_epoch)


def apply_options(cfg: ExperimentConfig, opts: RunOptions) -> ExperimentConfig:
    """A copy of `cfg` with --init, --one-epoch and --max-steps, checked, applied."""
    check_options(opts)
    out = cfg.model_copy(deep=True)
    if opts.one_epoch:
        out.training.num_train_epochs = 1
    if opts.max_steps:
        out.training.max_steps = opts.max_steps
    if opts.init:
        out.model.init = opts.init  # type: ignore[assignment]
    return out


def with_generation(cfg: ExperimentConfig, path: str | Path) -> ExperimentConfig:
    """A run's config with a tuned `generation` (and `prompt`) section from `path` (`tune/best.yaml`)."""
    path = Path(path)
    delta = read_yaml_mapping(path, "generation", "a mapping with a generation section")
    unknown = sorted(set(delta) - {"generation", "prompt"})
    if unknown:
        raise DialsumError(f"{path}: {unknown[0]}: only generation and prompt sections are read from here")
    return validate_dict(deep_merge(cfg.model_dump(mode="json"), delta), path)


def differences(before: ExperimentConfig, after: ExperimentConfig, keys: tuple[str, ...]) -> list[str]:
    """`section.key: A before, B now` for each setting under `keys` (sections or section.key) that differs."""
    old, new = _flat(before), _flat(after)
    chosen = [k for k in old if any(k == p or k.startswith(p + ".") for p in keys)]
    return [f"{k}: {old[k]!r} in the run, {new[k]!r} now" for k in chosen if old[k] != new[k]]


def _flat(cfg: ExperimentConfig) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in cfg.model_dump(mode="json").items()
            for key, value in values.items()}
