"""The result files of runs, tunings, ensembles and sweeps, typed: written and read back only through these models.

    dialsum train CONFIG --init tiny       # writes model_info.json, then metrics.json last
    dialsum tune RUN_DIR                   # writes tune/result.json
    dialsum ensemble RUN RUN RUN --out DIR # writes DIR/ensemble.json
    dialsum sweep CONFIG --trials 8 --out DIR  # writes DIR/result.json
    dialsum report runs/suites/demo        # reads them all
    pytest tests/test_runfiles.py

`RunMetrics` is a run's `metrics.json`, `ModelInfo` its `model_info.json` (what loading the trained model
needs), `TuneResult` its `tune/result.json`, `EnsembleResult` an ensemble's `ensemble.json` and `SweepResult` a
sweep's `result.json`. A file that
does not match its model is one line naming the file and the field (`read`); the suite's own report, which
must never stop the experiments, takes the same reason as a note instead (`load`). Files written by earlier
versions still read: a field they lack is None, and a key they held that is no longer written is ignored
(a `tune/result.json` from before held-out scoring holds no `heldout`, and reports no tuned score).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text

METRICS, MODEL_INFO, TUNE_RESULT, ENSEMBLE = "metrics.json", "model_info.json", "tune/result.json", "ensemble.json"
SWEEP_RESULT = "result.json"  # in a sweep's folder


class RunFile(BaseModel):
    """Typed on every assignment; keys of older versions that are no longer written are ignored on reading."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    def write(self, path: Path) -> Path:
        """Atomically, with the fields that were set (a run's metrics grow step by step)."""
        text = json.dumps(self.model_dump(mode="json", exclude_unset=True), ensure_ascii=False, indent=2)
        return atomic_write_text(path, text + "\n")


M = TypeVar("M", bound=RunFile)


# ---------------------------------------------------------------- metrics.json


class Scores(RunFile):
    """One tokenization's dev scores: R1/R2/RL F1 as fractions, final = their mean x 100."""

    rouge1: float | None = None
    rouge2: float | None = None
    rougeL: float | None = None
    final: float | None = None
    sum: float | None = None
    n: int | None = None
    tokenize: str | None = None


class DevScores(RunFile):
    morpheme: Scores | None = None  # the leaderboard's tokenization
    whitespace: Scores | None = None


class Baseline(RunFile):
    """The longest turn of each dialogue copied as its summary, on the same dev rows (`dialsum.baselines`)."""

    name: str | None = None
    n: int | None = None
    morpheme: float | None = None
    whitespace: float | None = None


class RunMetrics(RunFile):
    """A run's metrics.json, the last file a run writes: its measurements, dev scores and settings."""

    experiment: str | None = None
    label: str | None = None
    description: str | None = None
    model_name: str | None = None
    arch: str | None = None
    init: str | None = None
    added_tokens: int | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    world_size: int | None = None
    effective_batch: int | None = None
    learning_rate: float | None = None
    steps: int | None = None
    epochs: float | None = None
    train_loss: float | None = None
    best_checkpoint: str | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    train_tokens_per_second: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str | None = None
    replicas_identical: bool | None = None
    dev: DevScores | None = None
    baseline: Baseline | None = None
    submission: str | None = None
    adaptations: list[str] = Field(default_factory=list)
    lora_targets: list[str] | None = None
    wall_seconds: float | None = None

    @property
    def dev_final(self) -> float | None:
        """The run's dev score: morpheme final, the leaderboard's number."""
        return self.dev.morpheme.final if self.dev and self.dev.morpheme else None

    def summary(self) -> str:
        """`dialsum train`'s last line: the morpheme dev scores as JSON."""
        scores = self.dev.morpheme if self.dev and self.dev.morpheme else Scores()
        return json.dumps({k: getattr(scores, k) for k in ("rouge1", "rouge2", "rougeL", "final")})


# ---------------------------------------------------------------- model_info.json


class ModelInfo(RunFile):
    """How to load a run's trained model again: written before training, read by every reuse of the run."""

    base: str  # the base model: a hub id, a local checkpoint's absolute path, or `base_model` inside the run
    family: str
    vocab_size: int
    adapter: bool  # LoRA: model/ holds the adapter over the base; else model/ holds the whole model
    four_bit: bool
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    init: str | None = None
    model_name: str | None = None
    world_size: int = 1  # DDP processes that trained it


# ---------------------------------------------------------------- tune/result.json


class TuneSearch(RunFile):
    rows: int
    trials: int
    own: float
    chosen: float
    chosen_trial: int
    chosen_is_own: bool
    chosen_params: dict[str, Any]


class TuneHeldout(RunFile):
    rows: int
    own: float
    tuned: float


class TuneResult(RunFile):
    """`dialsum tune`'s result: the choice on the search rows, both settings scored on the held-out rows."""

    trials: int | None = None
    dev_rows: int | None = None
    split_seed: int | None = None
    search: TuneSearch | None = None
    heldout: TuneHeldout | None = None  # None: written before tuning held rows out (its scores were chosen there)
    recommended: Literal["tuned", "own"] | None = None
    best_params: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        """The result in one line: what the search chose, and both settings on the held-out rows."""
        search, held = self.search, self.heldout
        if search is None or held is None:
            return ("tune/result.json was written before tuning held dev rows out, so its tuned score was chosen "
                    "on the rows it was scored on and is not shown; run dialsum tune again")
        verdict = ("best.yaml holds the tuned settings" if self.recommended == "tuned" else
                   "the tuned settings do not beat the run's own there, so best.yaml keeps the run's own")
        chosen = "the run's own settings" if search.chosen_is_own else f"trial {search.chosen_trial}"
        return (f"{search.trials} trials on {search.rows} search rows chose {chosen} ({search.chosen:.2f} "
                f"there, the run's own {search.own:.2f}); on the {held.rows} held-out rows the run's own "
                f"settings score {held.own:.2f}, the tuned ones {held.tuned:.2f}: {verdict}")


# ---------------------------------------------------------------- ensemble.json


class EnsembleMember(RunFile):
    name: str
    run_dir: str
    dev_final: float  # on the ensemble's dev rows
    dev_picks: int
    test_picks: int


class EnsembleResult(RunFile):
    """`dialsum ensemble`'s result: its dev score beside each member's, on the same rows."""

    dev_final: float
    dev_rows: int | None = None
    dev_rows_scored: str | None = None
    candidates: int = 1
    weighted: bool = False
    tuned: bool = False
    weights: dict[str, Any] | None = None  # None: written before weights were cross-fitted
    members: list[EnsembleMember]

    @property
    def score_is_honest(self) -> bool:
        """Whether `dev_final` was scored on rows no choice was made on: an ensemble written before weights
        were cross-fitted weighted each pick by scores on its own rows, and one of tuned members was scored on
        the rows their tuning chose on."""
        return self.weights is not None or not (self.weighted or self.tuned)


# ---------------------------------------------------------------- a sweep's result.json


class SweepResult(RunFile):
    """`dialsum sweep`'s result: the trials' ends, the best trial on the search rows, and the best trial and trial
    0 scored on the held-out rows (the scores the sweep reports)."""

    trials: int
    states: dict[str, int]  # COMPLETE, PRUNED, FAIL, RUNNING: how many trials ended so
    steps: int  # optimizer steps every trial trained, together
    best_trial: int
    best_search: float  # its dev score on the search rows: what chose it, not its score
    search_rows: int
    heldout_rows: int
    heldout: dict[int, float]  # the best trial's and trial 0's scores on the held-out rows
    recommended: int  # the trial whose settings best.yaml holds
    verdict: str


# ---------------------------------------------------------------- reading


class Unreadable(Exception):
    """Why a run file cannot be used: `short` for a report's note, `detail` for an error line."""

    def __init__(self, short: str, detail: str) -> None:
        super().__init__(detail)
        self.short, self.detail = short, detail


def parse(path: Path, model: type[M]) -> M:
    """The file as `model`; `Unreadable` when it is missing, not JSON or does not match."""
    if not path.is_file():
        raise Unreadable("missing", "not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise Unreadable(f"unreadable ({type(err).__name__})",
                         f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise Unreadable(f"unreadable ({type(err).__name__})", f"cannot be read ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise Unreadable("is not an object", f"holds {type(data).__name__}, not an object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise Unreadable(f"does not match ({field}: {first['msg']})",
                         f"{field}: {first['msg']} (found {first.get('input')!r})") from None


def read(path: Path, model: type[M], fix: str) -> M:
    """The file as `model`; anything wrong with it is one line naming the file, the field and `fix`."""
    try:
        return parse(path, model)
    except Unreadable as err:
        raise DialsumError(f"{path}: {err.detail}; {fix}") from None


def load(path: Path, model: type[M]) -> tuple[M | None, str | None]:
    """The file as `model`, or None and why in a few words (`metrics.json unreadable (JSONDecodeError)`)."""
    try:
        return parse(path, model), None
    except Unreadable as err:
        return None, f"{path.name} {err.short}"
