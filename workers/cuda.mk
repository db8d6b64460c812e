# The cuda backend (src/backends/cuda*) and its KV transport
# (src/pd/pd_transport_cuda.c), included by the Makefile.
#
# Built when nvcc is found: $(NVCC) (default /usr/local/cuda/bin/nvcc), else
# nvcc on PATH; `make CUDA=off` leaves it out.  Without it nothing of the
# backend is compiled and `--backend cuda` is refused by the flag parser.
#
#   kernels (*.cu)     nvcc, sm_90 code plus compute_90 PTX, which newer
#                      GPUs compile at load (CUDA_ARCHS overrides)
#   host side (*.c)    cc, with the CUDA headers, plain and ASan builds
#   LLMD_HAVE_CUDA     defined for every C file through CUDA_DEFS
#   make gpu-test      kernel and logits tests on a GPU; each prints SKIP
#                      and succeeds where no device is visible

# included above the Makefile's first rule: keep `all` the default goal
.DEFAULT_GOAL := all

CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
CUDA ?= auto
NVCC_FOUND := $(if $(filter off,$(CUDA)),,$(or $(shell test -x '$(NVCC)' && echo '$(NVCC)'),$(shell command -v nvcc 2>/dev/null)))

GPU_TESTS := $(B)/test-cuda-kernels $(B)/test-cuda-logits

ifneq ($(NVCC_FOUND),)

CUDA_ROOT := $(patsubst %/bin/,%,$(dir $(NVCC_FOUND)))
CUDA_ARCHS ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -O3 -std=c++17 $(CUDA_ARCHS) -Xcompiler -Wall,-Wextra -Isrc
CUDA_DEFS := -DLLMD_HAVE_CUDA -I$(CUDA_ROOT)/include
CUDA_HDRS := $(wildcard src/backends/cuda*.h src/backends/cuda*.cuh)
CUDA_KERNEL_OBJS := $(patsubst src/%.cu,$(B)/cuda/%.o,$(wildcard src/backends/cuda*.cu))
CUDA_HOST := $(wildcard src/backends/cuda*.c) src/pd/pd_transport_cuda.c
CUDA_OBJS := $(CUDA_KERNEL_OBJS) $(patsubst src/%.c,$(B)/cuda/%.o,$(CUDA_HOST))
# the kernels are not sanitized (ASan does not reach device code); the
# host side is
CUDA_ASAN_OBJS := $(CUDA_KERNEL_OBJS) $(patsubst src/%.c,$(B)/cuda-asan/%.o,$(CUDA_HOST))
CUDA_LIBS := -L$(CUDA_ROOT)/lib64 -Wl,-rpath,$(CUDA_ROOT)/lib64 \
             -lcublas -lcublasLt -lcudart -lnccl -lstdc++

$(B)/cuda/%.o: src/%.cu $(CUDA_HDRS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c -o $@ $<

$(B)/cuda/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(WARN) $(CFLAGS) $(PKG_CFLAGS) $(INCLUDES) $(CUDA_DEFS) -c -o $@ $<

$(B)/cuda-asan/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(WARN) -O1 -g $(SANITIZE) $(PKG_CFLAGS) $(INCLUDES) $(CUDA_DEFS) -c -o $@ $<

# GPU tests: the worker's objects without main(), plus the test's own file
.SECONDEXPANSION:
$(B)/test-cuda-%: tests/gpu/test_cuda_%.c tests/gpu/gpu_test.h \
                  $$(filter-out $(B)/obj/main.o,$$(WORKER_OBJS)) $$(TOOLS_OBJS) $(CUDA_OBJS)
	$(CC) $(STD) $(WARN) $(CFLAGS) $(PKG_CFLAGS) $(INCLUDES) $(CUDA_DEFS) -o $@ \
	    $(filter-out %.h,$^) $(PKG_LIBS) $(CUDA_LIBS) -lpthread -lm

# the cuda-ipc copy pattern against a device-to-device copy (bench-pd)
$(B)/llmd-pd-bench-cuda: tools/pd_bench_cuda.c
	$(CC) $(STD) $(WARN) $(CFLAGS) $(INCLUDES) $(CUDA_DEFS) -o $@ $< $(CUDA_LIBS)

all: $(B)/llmd-pd-bench-cuda

# compute-sanitizer (memcheck, then racecheck on the kernels) where the
# toolkit has it and a device is visible
SANITIZER := $(or $(wildcard $(CUDA_ROOT)/bin/compute-sanitizer),$(shell command -v compute-sanitizer 2>/dev/null))

gpu-test: $(GPU_TESTS) $(B)/llmd-worker
	@for t in $(GPU_TESTS); do ./$$t || exit 1; done
	node tests/gpu/pd_cuda.mjs $(abspath $(B)/llmd-worker)
	@if [ -n "$(SANITIZER)" ] && ./$(B)/test-cuda-kernels --probe; then \
	    echo "# compute-sanitizer on the kernel tests"; \
	    $(SANITIZER) --error-exitcode 1 --tool memcheck ./$(B)/test-cuda-kernels && \
	    $(SANITIZER) --error-exitcode 1 --tool racecheck ./$(B)/test-cuda-kernels && \
	    $(SANITIZER) --error-exitcode 1 --tool initcheck ./$(B)/test-cuda-kernels; \
	elif [ -z "$(SANITIZER)" ]; then echo "SKIP: compute-sanitizer not found"; fi

else

gpu-test:
	@echo "SKIP: gpu-test: built without nvcc (CUDA_HOME=$(CUDA_HOME))"

endif

# Objects that look at LLMD_HAVE_CUDA are rebuilt when it comes or goes.
CUDA_STAMP := $(B)/cuda-config
$(shell mkdir -p $(B) && (echo '$(CUDA_DEFS)' | cmp -s - $(CUDA_STAMP) \
        || echo '$(CUDA_DEFS)' > $(CUDA_STAMP)))
$(foreach o,backend config model_bench pd/pd_transport,$(B)/obj/$(o).o $(B)/asan/$(o).o) \
$(patsubst tests/unit/%.c,$(B)/asan/tests/%.o,$(wildcard tests/unit/*.c)): $(CUDA_STAMP)

.PHONY: gpu-test
