"""The shape of the package: imports point one way, modules stay small, the suite's driver loads no torch.

    pytest tests/test_architecture.py

Every `import` and `from ... import` in `src/dialsum` counts, wherever it stands (inside a function
too), and importing `dialsum.a.b` counts as importing the packages `dialsum.a` on the way. The layers
(DESIGN.md): cli and the public API (dialsum.api, re-exported by the package) at the top; the commands (suite, sweep, tune, ensemble, report, validate, config help) above the
runs (recipe, finished_run, resume); everything else (config, data, modeling, metrics, ...) at the bottom.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 500
LONG_ON_PURPOSE = {"dialsum.samplegen"}  # the sample generator's word lists
TOP = {"dialsum", "dialsum.api", "dialsum.cli", "dialsum.rank"}  # the package re-exports the API
COMMANDS = {"dialsum.tune", "dialsum.tune_space", "dialsum.tune_study", "dialsum.tune_finish", "dialsum.ensemble",
            "dialsum.validation", "dialsum.confighelp"}
COMMAND_PACKAGES = ("dialsum.suite", "dialsum.report", "dialsum.sweep")
RUNS = {"dialsum.recipe", "dialsum.finished_run", "dialsum.resume"}


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The dialsum modules and packages `name` imports, lazily or not."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            parts = target.split(".")
            out.update(q for i in range(2, len(parts) + 1) if (q := ".".join(parts[:i])) in known and q != name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_lazy_imports_and_package_inits_included() -> None:
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in modules().items()
            if name not in LONG_ON_PURPOSE and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_suite_driver_loads_no_torch() -> None:
    code = "import sys, dialsum.suite.runner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def layer(name: str) -> int:
    """3: cli; 2: the commands; 1: a run and the way back into one; 0: everything below them."""
    if name in TOP:
        return 3
    if name in COMMANDS or name.startswith(COMMAND_PACKAGES):
        return 2
    return 1 if name in RUNS else 0


def test_imports_point_downward_only() -> None:
    known = modules()
    upward = sorted(f"{name} -> {target}" for name, path in known.items()
                    for target in imported(name, path, known) if layer(target) > layer(name))
    assert upward == []


def function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import inside a function."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for fn in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [(n.lineno, lines[n.lineno - 1]) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def test_every_lazy_import_says_why() -> None:
    """A lazy import keeps a slow library (or, in the CLI, everything) out of a start; none dodges a cycle. Each
    says why on its line or the line before; the CLI's module docstring says it for all of its commands."""
    silent = []
    for name, path in modules().items():
        if name == "dialsum.cli":
            assert "imports what it calls inside its own body" in (path.read_text(encoding="utf-8"))
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        silent += [f"{name}:{n}" for n, _ in function_imports(path) if not said(lines, n - 1)]
    assert silent == []


def said(lines: list[str], i: int) -> bool:
    """Line i (an import) carries a comment, or the block of imports it stands in opens with one."""
    while i >= 0:
        text = lines[i].strip()
        is_import = text.startswith(("import ", "from "))
        if text.startswith("#") or (is_import and "#" in text):
            return True
        if text and not is_import:
            return False
        i -= 1
    return False


def loaded_after(statement: str) -> set[str]:
    """The top-level packages in sys.modules after `statement` in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_cli_starts_without_torch_pandas_or_transformers() -> None:
    for statement in ("import dialsum.cli", "import dialsum"):
        assert not loaded_after(statement) & {"torch", "pandas", "transformers"}, statement


def test_the_suite_state_and_the_locks_load_no_pandas() -> None:
    assert "pandas" not in loaded_after("import dialsum.suite.state, dialsum.suite.lock, dialsum.locks, dialsum.fileio")
