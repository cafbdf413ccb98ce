#!/usr/bin/env bash
# Builds the libFuzzer targets (IDX, CIFAR, JPEG/PNG, .apot readers) with clang-14 (ASan + UBSan)
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
  [ "$out/$name" -nt "fuzz/$name.cpp" ] && [ -z "${APOT_FUZZ_REBUILD:-}" ] && return 0
  clang++-14 "${flags[@]}" "fuzz/$name.cpp" "$@" -o "$out/$name"
}
build fuzz_idx src/data/idx.cpp "${common[@]}" -lz
build fuzz_cifar src/data/cifar.cpp "${common[@]}"
build fuzz_image src/data/image_decode.cpp "${common[@]}" -lturbojpeg -lpng
build fuzz_apot src/runtime/format.cpp -lxxhash
for target in fuzz_idx fuzz_cifar fuzz_image fuzz_apot; do
  corpus=fuzz/corpus/${target#fuzz_}
  [ -d "$corpus" ] || { echo "fuzz: missing corpus $corpus"; exit 1; }
  work=$(mktemp -d)
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "$out/artifacts"
  "$out/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/" "$work" "$corpus" 2>&1 \
    | grep -E "DONE|Done|ERROR|SUMMARY" | tail -2 || true
  # A crash leaves a crash-* file in the current directory and a non-zero exit: fail loudly.
  if ls "$out"/artifacts/crash-* "$out"/artifacts/leak-* "$out"/artifacts/timeout-* >/dev/null 2>&1; then
    echo "fuzz: $target found a problem (see $out/artifacts)"; exit 1
  fi
  rm -rf "$work"
done
