# groundup — the two set-up commands are `make chat` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
GROUNDUP := $(VENV)/bin/groundup
# The reference llama.cpp is built for the CPU it runs on: AVX2 always, AVX-512 parts only
# where /proc/cpuinfo has them, AMX never (its kernels crash on some of these CPUs), and
# ggml's own thread pool instead of OpenMP (OpenMP decode measured 20x slower on 2 vCPUs).
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has = $(if $(filter $(1),$(CPU_FLAGS)),ON,OFF)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=$(call has,avx512f) -DGGML_AVX512_VNNI=$(call has,avx512_vnni) \
	-DGGML_AVX512_BF16=$(call has,avx512_bf16) -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF
LLAMA_CPP_VERSION := 0.3.36

.PHONY: chat test test-slow bench bench-engine bench-serve bench-bpe bench-data bench-eval install install-ref pull clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

$(VENV)/.reference: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

# The web chat's browser test drives Debian's Chromium through Playwright (never `playwright install`).
$(VENV)/.browser: $(VENV)/.installed
	command -v /usr/bin/chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	touch $@

install: $(VENV)/.installed

install-ref: $(VENV)/.reference

pull: install
	$(GROUNDUP) pull smollm2-135m-instruct
	$(GROUNDUP) pull gemma3-270m
	$(GROUNDUP) eval pull all

chat: install
	$(GROUNDUP) pull smollm2-135m-instruct
	$(GROUNDUP) chat

test: install-ref $(VENV)/.browser pull
	$(PY) -m pytest -q

test-slow: install-ref $(VENV)/.browser pull
	$(PY) -m pytest -q -m slow

bench: bench-engine bench-serve bench-bpe bench-data bench-eval

bench-engine: install-ref pull
	$(PY) -m bench.engine --variants fp32,int8,int4

bench-serve: install pull
	$(PY) -m bench.llama_server
	$(PY) -m bench.serve --out bench/results

bench-bpe: install
	$(PY) -m bench.bpe

bench-data: install
	$(PY) -m bench.data

clean:
	rm -rf $(VENV) build *.egg-info

bench-eval: install pull
	$(PY) -m bench.eval --task arc_easy --limit 1000
