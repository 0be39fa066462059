# One entry point: `make demo` and `make test` install what they need first.
# VENV may live outside the checkout (CI keeps one in ~/.cache so torch and the compiled
# mmcv survive between fresh clones); the editable install always follows this checkout.
VENV ?= .venv
PYTHON ?= python3.11
VENV_BIN := $(abspath $(VENV))/bin
VENV_PY := $(VENV_BIN)/python
# Scripts and tests that call `python`, `ruff` or `torchrun` get the venv's.
RUN := PATH="$(VENV_BIN):$$PATH"

.PHONY: install lint test test-fast reliability-figures mutation demo demo-cifar toy-data clean

# The GPU machines' wheel folder (wheels/gpu, a few MiB, skipped when already there): the
# offline installer's test uses it; without a registry it is left out and that test skips.
install: $(VENV_PY)
	@$(VENV_PY) tools/install_env.py
	@PYTHON=$(VENV_PY) bash tools/deploy/build_gpu_wheels.sh >/dev/null || \
		echo "make install: wheels/gpu not built (no registry?): its test will skip" >&2

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

lint: install
	$(RUN) ruff check .

# pytest's exit code 5 means it collected no test: an empty suite is a failure here.
# TEST_WORKERS pytest-xdist processes share the tests file by file (a module's fixtures stay
# in one worker; tests/conftest.py makes the session's training once for all of them);
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(RUN) ruff check .
	@$(RUN) python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make test: pytest collected no tests (exit 5); an empty suite is a failure" >&2; \
	fi; \
	exit $$rc

# The tests not marked slow (no training, evaluation or subprocess): a couple of minutes.
test-fast: install
	$(RUN) ruff check .
	$(RUN) python -m pytest -q -m "not slow" tests

# The reliability tests alone; their counts (bad-input cases, fuzz examples, kills survived,
# outputs lost, hostile checkpoints refused) go to work_dirs/reliability_figures.json.
RELIABILITY_TESTS := tests/unit/models/test_fuzz.py tests/unit/utils/test_hostile_checkpoints.py \
	tests/integration/test_bad_inputs.py tests/integration/test_interruption.py \
	tests/integration/test_hostile_tools.py tests/integration/test_distributed_search.py \
	tests/integration/test_ctrl_c.py tests/integration/test_silent_failures.py \
	tests/unit/utils/test_fileio_interrupted.py
reliability-figures: install
	@mkdir -p work_dirs
	$(RUN) SIDT_RELIABILITY_FIGURES=work_dirs/reliability_figures.json \
		python -m pytest -q $(RELIABILITY_TESTS)
	@cat work_dirs/reliability_figures.json

# The mutation score of the core modules (pyproject.toml [tool.mutmut]; not part of `make test`,
# it takes about an hour on 2 cores): mutmut's run, then docs/mutation.json and the figures of
# docs/mutation.md from its results.
mutation: install
	rm -rf mutants
	$(RUN) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 mutmut run --max-children $(or $(MUTATION_WORKERS),2)
	$(RUN) python tools/analysis/mutation_report.py --write docs/mutation.json

toy-data: install
	$(RUN) python tools/dataset/make_toy_coco.py --out-dir data/toy_coco --overwrite \
		--num-train 512 --num-val 64

demo: install
	$(RUN) python tools/demo.py

# SiDT as CIFAR-100 classification through mmpretrain, on the generated set, CPU only:
# dense -> search -> select 0.6 -> retrain -> test; writes work_dirs/demo-cifar/report.md.
demo-cifar: install
	$(RUN) python tools/demo_cifar.py

clean:
	rm -rf work_dirs data/toy_coco data/toy_cifar100 .pytest_cache .ruff_cache build \
		*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
