# persona.c Makefile. Every program lands in the repository root (llm.c style).
# `make help` lists the targets.

CC      ?= cc
CFLAGS  ?= -O3
CFLAGS  += -std=c11 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
LDLIBS  += -lpcre2-8 -lcjson -lm
# The sanitizer build that `make test` runs the tests with (AddressSanitizer + UBSan,
# any finding is fatal).
SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

# CUDA: built when nvcc is on PATH, for an explicit list of targets (override GENCODE to
# change it, e.g. `make GENCODE="-gencode arch=compute_90,code=sm_90"`).
NVCC    ?= nvcc
GENCODE ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVFLAGS ?= -O3 -std=c++17 $(GENCODE) -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)

PYTHON  ?= python3
VENV     = .venv

TOKENIZER_SRC = common/util.c tokenizer/utf8.c tokenizer/strmap.c tokenizer/sentencepiece.c \
                tokenizer/tekken.c tokenizer/tokenizer.c tokenizer/chat.c
TOKENIZER_HDR = $(wildcard common/*.h tokenizer/*.h)

CPU_PROGRAMS  = tokenize
CUDA_PROGRAMS = device_info
TESTS = $(patsubst test/%.c,%,$(wildcard test/test_*.c))

.PHONY: all cuda help test test-build clean venv
.DEFAULT_GOAL := all

ifneq ($(HAVE_NVCC),)
all: $(CPU_PROGRAMS) $(CUDA_PROGRAMS)
else
all: $(CPU_PROGRAMS)
	@echo "note: nvcc not found on PATH; CUDA programs ($(CUDA_PROGRAMS)) not built"
endif

help:
	@echo "persona.c targets:"
	@echo "  make              build every CPU program, and the CUDA programs when nvcc is on PATH"
	@echo "  make tokenize     the tokenizer CLI (./tokenize --help)"
	@echo "  make cuda         the CUDA programs ($(CUDA_PROGRAMS)) for GENCODE=\"$(GENCODE)\""
	@echo "  make test         build with -Werror and with ASan+UBSan, run every test, print 'N passed, N failed'"
	@echo "  make venv         the Python virtual environment for the reference helpers (requirements.txt)"
	@echo "  make clean        remove build outputs"

tokenize: tokenizer/tokenize.c $(TOKENIZER_SRC) $(TOKENIZER_HDR)
	$(CC) $(CFLAGS) -o $@ tokenizer/tokenize.c $(TOKENIZER_SRC) $(LDLIBS)

cuda: $(CUDA_PROGRAMS)

device_info: kernels/bench/device_info.cu kernels/common.cuh
	$(NVCC) $(NVFLAGS) -o $@ kernels/bench/device_info.cu

# ---------------------------------------------------------------------------------------
# Tests. Every test program is built twice: optimised with -Werror (build/test/) and with
# the sanitizers (build/san/); the sanitizer builds are the ones that run. The reference
# comparisons (test/test_*.sh) run the sanitized ./tokenize against sentencepiece and
# mistral-common from the virtual environment.

build/test/%: test/%.c $(TOKENIZER_SRC) $(TOKENIZER_HDR) test/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TOKENIZER_SRC) $(LDLIBS)

build/san/%: test/%.c $(TOKENIZER_SRC) $(TOKENIZER_HDR) test/test.h
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -O3,$(CFLAGS)) $(SANFLAGS) -o $@ $< $(TOKENIZER_SRC) $(LDLIBS)

build/san/tokenize: tokenizer/tokenize.c $(TOKENIZER_SRC) $(TOKENIZER_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -O3,$(CFLAGS)) $(SANFLAGS) -o $@ tokenizer/tokenize.c $(TOKENIZER_SRC) $(LDLIBS)

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

test-build: all $(addprefix build/test/,$(TESTS)) $(addprefix build/san/,$(TESTS)) build/san/tokenize

test: test-build venv
	@bash test/run.sh $(addprefix build/san/,$(TESTS)) test/test_*.sh

clean:
	rm -rf build $(CPU_PROGRAMS) $(CUDA_PROGRAMS)
