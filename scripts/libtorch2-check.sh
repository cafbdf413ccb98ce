#!/usr/bin/env bash
# Builds apot against a pip-installed LibTorch 2.x (CUDA or CPU) and runs the whole CTest suite,
# the CUDA quantiser test included where a GPU is present. For machines without Debian's
# packages: DEPS names a folder of Debian bookworm .deb files (the -dev packages of
# scripts/setup.sh), unpacked under /tmp/apot-deps; dataset-*.deb is unpacked under /.
# Usage: scripts/libtorch2-check.sh [LOG_DIR]   (env: DEPS, PYTHON, BUILD_DIR, JOBS)
set -uo pipefail
LOG=${1:-/tmp/apot-libtorch2}
mkdir -p "$LOG"
PYTHON=${PYTHON:-python3}
BUILD_DIR=${BUILD_DIR:-build-libtorch2}
JOBS=${JOBS:-$(nproc)}
export PATH=$PATH:/usr/local/cuda/bin

{
  echo "== machine"; date -u; uname -srm; nproc
  grep -m1 'model name' /proc/cpuinfo
  echo "cpu flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  g++ --version | head -1; cmake --version | head -1; ninja --version
  command -v nvcc >/dev/null && nvcc --version | tail -1
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'
} 2>&1 | tee "$LOG/machine.txt"

prefix="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
if [ -n "${DEPS:-}" ]; then
  mkdir -p /tmp/apot-deps
  for f in "$DEPS"/*.deb; do
    case "$(basename "$f")" in
      dataset-*) dpkg -x "$f" / ;;
      *) dpkg -x "$f" /tmp/apot-deps ;;
    esac
  done
  prefix="$prefix;/tmp/apot-deps/usr"
  export LD_LIBRARY_PATH=/tmp/apot-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CPATH=/tmp/apot-deps/usr/include${CPATH:+:$CPATH}
fi

configure() {
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPOT_BUILD_BENCH=OFF \
    -DCMAKE_PREFIX_PATH="$prefix" "$@"
}
# LibTorch's CUDA config may need the CUDA language enabled in the calling project.
if ! configure >"$LOG/configure.log" 2>&1; then
  echo "== plain configure failed; retrying with the CUDA language enabled" | tee -a "$LOG/configure.log"
  echo 'enable_language(CUDA)' >/tmp/apot-enable-cuda.cmake
  rm -rf "$BUILD_DIR"
  configure -DCMAKE_PROJECT_INCLUDE=/tmp/apot-enable-cuda.cmake -DCMAKE_CUDA_ARCHITECTURES=native \
    >>"$LOG/configure.log" 2>&1 || { tail -40 "$LOG/configure.log"; exit 1; }
fi
grep -E "Torch|CUDA|oneDNN" "$LOG/configure.log" | head -20

# -k 0: every compile error in one pass.
cmake --build "$BUILD_DIR" -j "$JOBS" -- -k 0 >"$LOG/build.log" 2>&1
build_rc=$?
echo "== build rc=$build_rc"
grep -E "error|Error" "$LOG/build.log" | head -40

(cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 400) >"$LOG/ctest.log" 2>&1
test_rc=$?
echo "== ctest rc=$test_rc"
grep -E "tests passed|Failed|\*\*\*|Not Run" "$LOG/ctest.log" | head -30
"$BUILD_DIR"/tests/qat/test_qat --gtest_filter='*Cuda*' 2>&1 | tail -4 | tee "$LOG/cuda_test.txt"

# A backtrace of each failed test (at most four), where a debugger is installed.
GDB=$(command -v gdb || command -v cuda-gdb || true)
failed="$BUILD_DIR/Testing/Temporary/LastTestsFailed.log"
if [ -n "$GDB" ] && [ -s "$failed" ]; then
  for t in $(cut -d: -f2 "$failed" | head -4); do
    cmd=$(cd "$BUILD_DIR" && ctest -N -V -R "^${t}\$" | sed -n 's/.*Test command: //p' | head -1)
    eval "set -- $cmd"
    echo "== $t: $*"
    timeout 120 "$GDB" -batch -ex run -ex "bt 40" -ex "info sharedlibrary" --args "$@" 2>&1 | tail -120
  done >"$LOG/backtraces.txt" 2>&1
  ldd "$BUILD_DIR"/tests/train/test_train >>"$LOG/backtraces.txt" 2>&1
fi
exit $(( build_rc != 0 || test_rc != 0 ))
