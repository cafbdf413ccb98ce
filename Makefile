# Entry points for users and CI. `make run` and `make test` set up the machine first.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: run test test-asan setup build build-asan bench clean cifar10-data fuzz install deb

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The main job: a W4A4 APoT ResNet-20 trained on Fashion-MNIST (about 8 minutes on 2 cores),
# evaluated, exported to a packed .apot file and run by the integer engine.
RUN_DIR ?= runs/fashion-mnist-w4a4
run: build
	$(BUILD)/apot train recipes/fashion-mnist-resnet20-w4a4.toml --out $(RUN_DIR)
	$(BUILD)/apot eval --checkpoint $(RUN_DIR)/best.ckpt --data fashion-mnist
	$(BUILD)/apot export --checkpoint $(RUN_DIR)/best.ckpt --out $(RUN_DIR)/model.apot
	$(BUILD)/apot run $(RUN_DIR)/model.apot --data fashion-mnist --compare $(RUN_DIR)/best.ckpt
	$(BUILD)/apot report $(RUN_DIR) --out $(RUN_DIR)/report.html

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The tests that do not need LibTorch, under AddressSanitizer and UBSan.
$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAPOT_WITH_TORCH=OFF -DAPOT_SANITIZE=ON -DAPOT_WERROR=ON

build-asan: setup $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

# The runtime library, its headers, CMake package and pkg-config file, and the `apot` command
# (docs/EMBEDDING.md): make install PREFIX=/opt/apot
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# A Debian package of the runtime and its headers (apot-runtime), under $(BUILD)/packages.
deb: build
	cd $(BUILD) && cpack -G DEB

bench: build
	$(BUILD)/bench/bench_projection
	$(BUILD)/bench/bench_train_step

# libFuzzer targets (clang-14) for the IDX, CIFAR and image readers, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 20
fuzz: setup
	fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# CIFAR-10 as JPEG files (ImageFolder layout) from ../shared, for the CIFAR recipes.
cifar10-data: data/cifar10-jpeg/test

data/cifar10-jpeg/test:
	mkdir -p data/cifar10-jpeg
	tar xzf ../shared/data/cifar10-images.tar.gz -C data/cifar10-jpeg
