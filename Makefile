# Thin wrapper over CMake. `make run` builds and generates a story with the
# bundled model; `make test` builds and runs the whole test suite.
#
#   make test                        the suite, project compiler (Release, build/)
#   make test-clang                  the suite built by clang (build-clang/)
#   make test-sanitize               the suite under ASan + UBSan (build-sanitize/)
#   make test-tsan                   the threaded tests and the server under TSan (build-tsan/)
#   make test-cuda                   the CUDA backend's tests on this machine's GPU (build-cuda/)
#
# Any build dir and compiler: make test BUILD=build-x CC=clang
BUILD ?= build
# test also runs test-aarch64 when the cross toolchain is present; skip: never
AARCH64 ?= auto
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release
# more cmake -D options for the build dir's first configure (e.g. -DMINERVA_CUDA=OFF)
CMAKE_EXTRA ?=
# ctest arguments, e.g. CTEST_ARGS="-LE fuzz" to leave out the fuzz tests
CTEST_ARGS ?=
ifeq ($(origin CC),command line)
CMAKE_FLAGS += -DCMAKE_C_COMPILER=$(CC)
endif

# Sanitizer runs: a report ends the run with exit status 86, which no
# `minerva` command uses (0 success, 1 runtime failure, 2 usage error), so
# the end-to-end checks of expected failures cannot mistake one for the other.
SAN_EXIT = 86
SAN_FLAGS = -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g"
SAN_ENV = ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:exitcode=$(SAN_EXIT) \
          UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=$(SAN_EXIT) \
          TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode=$(SAN_EXIT)
# the tests that run threads from the test itself, and the server's end-to-end
# test (every request kind, 32 concurrent streams, cancels mid-stream, slow
# clients: about a minute under TSan) (a ctest -R pattern)
TSAN_TESTS = ^(test_threads|test_engine|test_jinja|e2e_serve)$$

.PHONY: all build run test test-clang test-sanitize test-tsan test-aarch64 test-cuda clean bootstrap fuzz bench

all: build

bootstrap:
	@sh scripts/bootstrap.sh

$(BUILD)/CMakeCache.txt:
	@sh scripts/bootstrap.sh
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) $(CMAKE_EXTRA)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/minerva generate -p "Once upon a time" -n 200

test: build
	cd $(BUILD) && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	@if [ "$(AARCH64)" != skip ] && command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && \
	    { command -v qemu-aarch64 || command -v qemu-aarch64-static; } >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory test-aarch64; \
	elif [ "$(AARCH64)" != skip ]; then \
	    echo "test-aarch64: skipped (no aarch64-linux-gnu-gcc or qemu-aarch64; scripts/bootstrap.sh installs them)"; fi

# The fuzz tests already ran in the project compiler's build.
test-clang:
	$(MAKE) test BUILD=build-clang CC=clang CTEST_ARGS="-LE fuzz" AARCH64=skip CMAKE_EXTRA=-DMINERVA_CUDA=OFF

test-sanitize:
	$(MAKE) test BUILD=build-sanitize CMAKE_FLAGS='$(SAN_FLAGS) -DMNV_SANITIZE=address,undefined -DMINERVA_CUDA=OFF' AARCH64=skip

test-tsan:
	$(MAKE) build-tsan/CMakeCache.txt BUILD=build-tsan CMAKE_FLAGS='$(SAN_FLAGS) -DMNV_SANITIZE=thread -DMINERVA_CUDA=OFF'
	cmake --build build-tsan -j $(JOBS) --target minerva_cli embed test_threads test_engine test_jinja
	cd build-tsan && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) -R '$(TSAN_TESTS)'

# The CUDA backend (needs nvcc and a GPU): every op against the CPU backend,
# the model fixtures and the engine on the device. Prints the test's summary
# lines and, on failure, its failures.
CUDA_BUILD ?= build-cuda
test-cuda:
	@sh scripts/bootstrap.sh
	cmake -S . -B $(CUDA_BUILD) -DMINERVA_CUDA=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(CUDA_BUILD) -j $(JOBS) --target test_cuda minerva_cli >/dev/null
	cd tests && ../$(CUDA_BUILD)/tests/test_cuda

# 64-bit ARM: cross-build with Debian's gcc-aarch64-linux-gnu into
# $(AARCH64_BUILD) and run the whole suite under qemu-aarch64. qemu's default
# CPU has the dot-product extension, so the suite runs the neon-dot level
# (the op tests force each implementation in turn); then the model tests run
# again capped at plain neon, where the exact quantized path is the default.
AARCH64_BUILD ?= build-aarch64
AARCH64_NEON_TESTS ?= test_convert|test_model|test_quant_models|e2e_generate|e2e_gptoss
test-aarch64:
	@sh scripts/bootstrap.sh
	cmake -S . -B $(AARCH64_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DMINERVA_CUDA=OFF $(CMAKE_FLAGS)
	cmake --build $(AARCH64_BUILD) -j $(JOBS)
	$(AARCH64_BUILD)/tests/run_minerva_cli --version
	cd $(AARCH64_BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(AARCH64_BUILD) && MINERVA_CPU=neon ctest --output-on-failure -j $(JOBS) -R '$(AARCH64_NEON_TESTS)'


clean:
	rm -rf $(BUILD) build-clang build-sanitize build-tsan build-cuda

# Install the libraries, header, pkg-config file, CMake package, the CLI and
# the bundled model under PREFIX (DESTDIR is honoured too).
PREFIX ?= /usr/local
.PHONY: install
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)
