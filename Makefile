# Thin wrapper over CMake. `make run` builds and generates a story with the
# bundled model; `make test` builds and runs the whole test suite.
BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all build run test clean bootstrap fuzz bench test-aarch64

all: build

bootstrap:
	@sh scripts/bootstrap.sh

$(BUILD)/CMakeCache.txt:
	@sh scripts/bootstrap.sh
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/minerva generate -p "Once upon a time" -n 200

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && \
	    { command -v qemu-aarch64 || command -v qemu-aarch64-static; } >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory test-aarch64; \
	else echo "test-aarch64: skipped (no aarch64-linux-gnu-gcc or qemu-aarch64; scripts/bootstrap.sh installs them)"; fi

# 64-bit ARM: cross-build with Debian's gcc-aarch64-linux-gnu into
# $(AARCH64_BUILD) and run the whole suite under qemu-aarch64. qemu's default
# CPU has the dot-product extension, so the suite runs the neon-dot level
# (the op tests force each implementation in turn); then the model tests run
# again capped at plain neon, where the exact quantized path is the default.
AARCH64_BUILD ?= build-aarch64
AARCH64_NEON_TESTS ?= test_convert|test_model|test_quant_models|e2e_generate|e2e_gptoss
test-aarch64:
	@sh scripts/bootstrap.sh
	cmake -S . -B $(AARCH64_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake $(CMAKE_FLAGS)
	cmake --build $(AARCH64_BUILD) -j $(JOBS)
	$(AARCH64_BUILD)/tests/run_minerva_cli --version
	cd $(AARCH64_BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(AARCH64_BUILD) && MINERVA_CPU=neon ctest --output-on-failure -j $(JOBS) -R '$(AARCH64_NEON_TESTS)'

clean:
	rm -rf $(BUILD)
