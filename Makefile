# Two commands that do their own set-up on a fresh machine:
#   make run    install into .venv, then train recipes/original.toml
#   make test   install into .venv (with test extras), then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# torch/torchvision pinned for this project's machines (pip finds them on local disk there);
# elsewhere any torch>=2.2 works: pip install -e .
TORCH = torch==2.14.1 torchvision==0.29.1

$(BIN)/digitsum: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

.PHONY: install run test
install: $(BIN)/digitsum

run: install
	$(BIN)/digitsum run recipes/original.toml

# --dist worksteal: an idle worker takes tests queued on a busy one, so slow tests at the end of
# one worker's queue do not leave the other core idle (measured: 37 s idle with the default, 15 s)
test: install
	$(BIN)/python -m pytest -q -n auto --dist worksteal
