"""The quick-start notebook: stored without outputs, and run top to bottom in a Jupyter kernel (nbclient).

    pytest tests/test_notebook.py            # the run is slow-marked: about two minutes on 2 CPU cores

The run injects a cell after the notebook's `parameters` cell (as papermill does) with smaller settings: a
tiny sample, one-layer models, one epoch, two tuning trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, ROOT

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def test_the_notebook_is_stored_without_outputs_and_with_one_parameters_cell() -> None:
    code = [c for c in cells() if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1


def parameters(out: Path) -> str:
    """Smaller settings than the notebook's own: a sample of 64 training and 12 dev dialogues, tiny models."""
    tiny = {key: value for key, value in (item.split("=", 1) for item in FAST)}
    tiny["training.num_train_epochs"] = "1"
    return "\n".join([
        "MAKE_DATA = {'train': 64, 'dev': 12, 'test': 12}",
        f"OUT = {str(out)!r}",
        "TUNE_TRIALS = 2",
        f"TINY = {[f'{k}={v}' for k, v in tiny.items()]!r}",
    ])


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[dev]')")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(parameters(tmp_path / "runs")))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "\n".join(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
                     for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "dev score" in text and "held-out rows" in text
    (written,) = (tmp_path / "runs").iterdir()
    run = written / "kobart_baseline"
    assert (run / "metrics.json").is_file() and (run / "tune" / "result.json").is_file()
    assert (written / "suite" / "dialogues.html").is_file() and (written / "compare" / "dialogues.html").is_file()
    assert (written / "submission_tuned.csv").read_text(encoding="utf-8").startswith("fname,summary")
