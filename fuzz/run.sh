#!/usr/bin/env bash
# Builds the libFuzzer targets (IDX, CIFAR, JPEG/PNG and .apot readers, the engine, the model-file
# reader, the ONNX importer) with clang-14 (ASan + UBSan)
# and runs each for a bounded time on its corpus in fuzz/corpus/<target>. Usage: fuzz/run.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude)
common=(src/data/in_memory.cpp)
build() {  # name sources... libs...
  local name=$1; shift
  local stale=${APOT_FUZZ_REBUILD:-}
  for f in "fuzz/$name.cpp" "$@"; do [ -f "$f" ] && [ "$f" -nt "$out/$name" ] && stale=1; done
  [ -f "$out/$name" ] && [ -n "$(find include src -name '*.h' -newer "$out/$name" -print -quit)" ] && stale=1
  [ -f "$out/$name" ] && [ -z "$stale" ] && return 0
  clang++-14 "${flags[@]}" "fuzz/$name.cpp" "$@" -o "$out/$name"
}
# The engine's sources as objects, each kernel file with the instruction set it is written for
# (as src/kernels/CMakeLists.txt says); OpenMP from GCC's libgomp. toml++ 3.3 asserts (or, with
# NDEBUG under clang, assumes) that a table header's key starts with a key character, which
# input such as `[[.` breaks; its parser then reports the error itself, which is what apot's
# GCC builds do (GCC has no __builtin_assume): the fuzz build turns toml++'s assertions off the
# same way.
engine_objects() {
  local obj=$out/engine-obj
  mkdir -p "$obj"
  local -A isa=(
    [projection_avx2]="-mavx2 -mfma" [gemm_avx2]="-mavx2 -mfma"
    [projection_avx512]="-mavx512f -mavx512dq -mavx512bw -mavx512vl"
    [gemm_avx_vnni]="-mavx2 -mfma -mavxvnni"
    [gemm_avx_vnni_evex]="-mavx2 -mfma -mavx512f -mavx512vl -mavx512vnni"
    [gemm_avx512_vnni]="-mavx512f -mavx512bw -mavx512vl -mavx512vnni"
    [gemm_winograd_avx512]="-mavx512f -mavx512bw -mavx512vl -mavx512vnni"
    [gemm_amx]="-mavx512f -mavx512bw -mavx512vl -mavx512vnni -mamx-tile -mamx-int8")
  for src in src/levels/*.cpp src/graph/*.cpp src/kernels/*.cpp src/runtime/*.cpp; do
    local base; base=$(basename "$src" .cpp)
    local o="$obj/$(basename "$(dirname "$src")")_$base.o"
    # Stale where the source or any header is newer (a header's change, such as a new member of
    # a class, must reach every object that includes it).
    if [ ! "$o" -nt "$src" ] || [ -n "${APOT_FUZZ_REBUILD:-}" ] ||
      [ -n "$(find include src -name '*.h' -newer "$o" -print -quit)" ]; then
      # shellcheck disable=SC2086
      clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
        -ffp-contract=off -fopenmp=libgomp '-DTOML_ASSERT(expr)=((void)0)' '-DAPOT_VERSION="fuzz"' -Iinclude -Isrc/kernels ${isa[$base]:-} \
        -c "$src" -o "$o"
    fi
    echo "$o"
  done
}
engine_objects >"$out/engine-objects.txt"
mapfile -t engine <"$out/engine-objects.txt"
build fuzz_idx src/data/idx.cpp "${common[@]}" -lz
build fuzz_cifar src/data/cifar.cpp "${common[@]}"
build fuzz_image src/data/image_decode.cpp "${common[@]}" -lturbojpeg -lpng
build fuzz_apot "${engine[@]}" -fopenmp=libgomp -lxxhash
build fuzz_model_file "${engine[@]}" -fopenmp=libgomp -lxxhash
build fuzz_onnx src/onnx/onnx_import.cpp src/onnx/onnx_ops.cpp src/onnx/constants.cpp "${engine[@]}" -fopenmp=libgomp -lxxhash -DONNX_NAMESPACE=onnx -DONNX_ML=1 \
  -lonnx_proto -lprotobuf
rm -rf "$out/artifacts"  # a problem found by an earlier run does not fail this one
for target in fuzz_idx fuzz_cifar fuzz_image fuzz_apot fuzz_model_file fuzz_onnx; do
  corpus=fuzz/corpus/${target#fuzz_}
  [ -d "$corpus" ] || { echo "fuzz: missing corpus $corpus"; exit 1; }
  work=$(mktemp -d)
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "$out/artifacts"
  "$out/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/" "$work" "$corpus" 2>&1 \
    | grep -E "DONE|Done|ERROR|SUMMARY" | tail -2 || true
  # A crash, leak or timeout leaves a file in the artifacts folder: fail loudly. (One `ls` of the
  # three patterns failed whenever one of them matched nothing, and so never fired.)
  if compgen -G "$out/artifacts/crash-*" >/dev/null || compgen -G "$out/artifacts/leak-*" >/dev/null ||
    compgen -G "$out/artifacts/timeout-*" >/dev/null; then
    echo "fuzz: $target found a problem (see $out/artifacts)"; exit 1
  fi
  rm -rf "$work"
done
