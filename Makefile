# Set-up and the two commands of the README. Everything runs offline: no hub access at run time.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo test test-fast lint clean

$(BIN)/dialsum: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray]'
	@touch $@

install: $(BIN)/dialsum

# Debian's Chromium for the report's browser tests (Playwright drives it; `playwright install` is never run),
# with a Korean font so that the pages' dialogues render in it. Without apt-get or root the tests are skipped
# and say why.
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
		echo "chromium is not installed (apt-get install chromium, as root): the report's browser tests are skipped"
	@fc-list :lang=ko 2>/dev/null | grep -q . || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -q >/dev/null && apt-get install -y -q fonts-noto-cjk >/dev/null; } || \
		echo "no Korean font (apt-get install fonts-noto-cjk, as root): pages show boxes for Korean text in Chromium"

# The five experiments with tiny models on the embedded sample, three epochs each (the seed's are
# 5-6; its quick mode is one, too few for a model trained from scratch to learn the task);
# generation capped at 64 tokens (the sample's summaries are shorter). A new output directory per
# run, so earlier demos are kept.
DEMO_ARGS := --init tiny --set training.num_train_epochs=3 --set generation.max_length=64

demo: install
	$(BIN)/dialsum suite configs/suites/main5.yaml $(DEMO_ARGS) --out runs/suites/demo-$$(date +%Y%m%d-%H%M%S)

# Everything, in two processes (a test module's tests stay in one, so its shared runs are made once),
# with the slowest tests' times printed at the end.
test: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 --dist loadscope --durations=25

# Everything but the multi-minute end-to-end runs (marked `slow`), in two processes: the inner loop
# while developing (about 4 minutes on 2 cores).
test-fast: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow" -n 2

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
