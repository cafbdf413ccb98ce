# Entry points for users and CI. `make run` and `make test` set up the machine first.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: run test test-asan setup build build-asan bench clean cifar10-data

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The main job. Until training lands it shows the level sets and the command list.
run: build
	$(BUILD)/apot levels --bits 4 --kind apot --role activation
	$(BUILD)/apot levels --bits 4 --kind apot --role weight
	$(BUILD)/apot --help

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The tests that do not need LibTorch, under AddressSanitizer and UBSan.
$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAPOT_WITH_TORCH=OFF -DAPOT_SANITIZE=ON

build-asan: setup $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

bench: build
	$(BUILD)/bench/bench_projection

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# CIFAR-10 as JPEG files (ImageFolder layout) from ../shared, for the CIFAR recipes.
cifar10-data: data/cifar10-jpeg/test

data/cifar10-jpeg/test:
	mkdir -p data/cifar10-jpeg
	tar xzf ../shared/data/cifar10-images.tar.gz -C data/cifar10-jpeg
