# Set-up and the two commands the README promises. Every target creates what it needs
# (a virtual environment in .venv) and is safe to re-run.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# The CPU build: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA
# build. Any torch >= 2.4 already in the venv is kept (e.g. a CUDA build you installed).
TORCH  ?= torch==2.13.0

.PHONY: run test lint check-all clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	@$(PY) -m pip install -q -e '.[dev]'
	@# Graphviz draws `alexnetc graph` pictures; installed where this machine allows it.
	@command -v dot >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq graphviz fonts-dejavu-core) >/dev/null 2>&1 \
	  || echo "note: Graphviz not installed; alexnetc graph will write .dot files"; }
	@touch $@

# The main job: check the paper's network, then train a small AlexNet on the digits data.
run: $(VENV)/.installed
	$(VENV)/bin/alexnetc specs/alexnet.net --check-shapes
	$(VENV)/bin/alexnetc train specs/alexnet-small.net --out runs/alexnet-small-$$(date +%Y%m%d-%H%M%S)

# The tests (CPU; Triton kernels through its interpreter), then the linters.
test: $(VENV)/.installed
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Every spec in specs/ through the checker (the invalid ones must fail).
check-all: $(VENV)/.installed
	@for f in specs/*.net; do $(VENV)/bin/alexnetc $$f -q >/dev/null 2>&1 && echo "ok    $$f" || echo "error $$f"; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
