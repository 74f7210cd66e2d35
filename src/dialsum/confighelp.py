"""`dialsum config`: each config field with its help, type, default and bounds or choices, from the schema itself.

    dialsum config                       # every section of an experiment config, a line per field
    dialsum config training              # one section
    dialsum config training.optim        # one field in full (also a seed-style flat key: learning_rate)
    dialsum config --suite settings      # the suite file's schema
    pytest tests/test_config.py -k help

Nothing here is written twice: the text is each field's `description=`, its type annotation, its default and
its `Field` bounds (`ge`, `le`, `gt`, `lt`, `min_length`), read from the pydantic models of
`dialsum.sections` and `dialsum.suite.schema`. An unknown key is a one-line error with a "did you mean".
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dialsum.config import SECTION_ALIASES, owner_section
from dialsum.errors import DialsumError
from dialsum.sections import SECTIONS
from dialsum.suite.schema import SuiteEnsemble, SuiteEntry, SuiteFile, SuiteSettings, SuiteSweep, SuiteTune

SUITE_SECTIONS: dict[str, type[BaseModel]] = {
    "settings": SuiteSettings, "experiments": SuiteEntry, "experiments.tune": SuiteTune,
    "experiments.sweep": SuiteSweep, "ensemble": SuiteEnsemble,
}
BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "<="),
          (annotated_types.Lt, "lt", "<"), (annotated_types.MinLen, "min_length", "at least"))


def explain(key: str | None = None, suite: bool = False) -> str:
    """The help text for `key` (a section, a section.key, or nothing for everything) of either schema."""
    sections = _suite_sections() if suite else dict(SECTIONS)
    what = "suite file" if suite else "experiment config"
    if not key:
        return "\n\n".join(_section_text(name, model) for name, model in sections.items())
    if key in sections:
        return _section_text(key, sections[key])
    section, name = _split(key, sections, suite)
    if section is None:
        raise DialsumError(f"dialsum config {key}: no such {what} section or key{_hint(key, sections)}; "
                           f"`dialsum config{' --suite' if suite else ''}` lists them all")
    return _field_text(section, name, sections[section].model_fields[name])


def _suite_sections() -> dict[str, type[BaseModel]]:
    """The suite file's top level ("" when shown: name, description) and its sections."""
    return {"": SuiteFile, **SUITE_SECTIONS}


def _split(key: str, sections: dict[str, type[BaseModel]], suite: bool) -> tuple[str | None, str]:
    """(section, field name) of `key`: section.key (a seed alias too), or a flat key one section owns."""
    section, _, name = key.rpartition(".")
    if not suite and section in SECTION_ALIASES:
        name = SECTION_ALIASES[section].get(name, name)
    if not section:
        section = ("" if name in SuiteFile.model_fields else None) if suite else owner_section(name)
        if not suite and section is not None:
            name = SECTION_ALIASES[section][name]
    if section is None or section not in sections or name not in sections[section].model_fields:
        return None, name
    return section, name


def _hint(key: str, sections: dict[str, type[BaseModel]]) -> str:
    known = [*sections, *(f"{s}.{f}" if s else f for s, m in sections.items() for f in m.model_fields)]
    close = difflib.get_close_matches(key, [k for k in known if k], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _section_text(name: str, model: type[BaseModel]) -> str:
    rows = [(f"{name}.{field}" if name else field, *_facts(info)) for field, info in model.model_fields.items()]
    width = max(len(r[0]) for r in rows)
    doc = (model.__doc__ or "").strip().splitlines()
    lines = [(f"[{name}]" if name else "[top level]") + (f"  {doc[0]}" if doc else "")]
    for key, kind, default, limits, text in rows:
        facts = ", ".join(x for x in (kind, limits, default if default == "required" else f"default {default}") if x)
        lines.append(f"  {key:<{width}}  {text}  ({facts})")
    return "\n".join(lines)


def _field_text(section: str, name: str, info: FieldInfo) -> str:
    kind, default, limits, text = _facts(info)
    key = f"{section}.{name}" if section else name
    aliases = [a for a in SECTION_ALIASES.get(section, {}) if SECTION_ALIASES[section][a] == name and a != name]
    lines = [key, f"  {text}", f"  type:     {kind}", f"  default:  {default}"]
    lines += [f"  allowed:  {limits}"] if limits else []
    lines += [f"  also:     {', '.join(aliases)}"] if aliases else []
    return "\n".join(lines)


def _facts(info: FieldInfo) -> tuple[str, str, str, str]:
    """(type, default, bounds or choices, help) of one field."""
    choices = _choices(info.annotation)
    limits = " and ".join(f"{word} {getattr(m, attr)}" for m in info.metadata
                          for kind, attr, word in BOUNDS if isinstance(m, kind))
    if choices:
        limits = "one of " + ", ".join(choices)
    return _type_name(info.annotation), _default(info), limits, info.description or ""


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return _shown(value)


def _shown(value: Any) -> str:
    """A default as YAML would hold it; a value model (one with a `help_type`, as a sweep range) with its fields."""
    if isinstance(value, BaseModel):
        if not hasattr(value, "help_type"):
            return "(its section's defaults)"
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.model_dump().items()) + "}"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value) if isinstance(value, str) else str(value).replace("'", "")


def _choices(annotation: Any) -> list[str]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return _choices(args[0]) if len(args) == 1 and _is_union(annotation) else []


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    """`int`, `float or null`, `list of str`, `one of ...` (a Literal), `section` (a nested model)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is typing.Literal:
        return "text"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return getattr(annotation, "help_type", "section")
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(annotation, str(annotation))
