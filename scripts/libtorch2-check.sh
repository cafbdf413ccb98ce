#!/usr/bin/env bash
# Builds apot against a pip-installed LibTorch 2.x (CUDA or CPU) and runs the whole CTest suite,
# the CUDA quantiser test included where a GPU is present. For machines without Debian's
# packages: DEPS names a folder of Debian bookworm .deb files (the -dev packages of
# scripts/setup.sh), unpacked under /tmp/apot-deps; dataset-*.deb is unpacked under /.
# Where a GPU is visible it then trains on it (train.device = cuda): one CIFAR-10 epoch pair in
# full precision and at W4A4 (time per epoch, images per second), and the paper's ResNet-20 W4A4
# recipe for GPU_SECONDS (as many epochs as fit), from the pretrained model in PRETRAINED.
# Usage: scripts/libtorch2-check.sh [LOG_DIR]
#   env: DEPS, PYTHON, BUILD_DIR, JOBS; TARGETS (build only these), TESTS (a ctest -R regex);
#        CIFAR (default data/cifar10-jpeg, or a .tar.gz of it), PRETRAINED, GPU_SECONDS (default 180)
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
  # The packages' pkg-config files name /usr: point them at the unpacked tree.
  sed -i "s|=/usr|=/tmp/apot-deps/usr|" /tmp/apot-deps/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
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
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}" -- -k 0 >"$LOG/build.log" 2>&1
build_rc=$?
echo "== build rc=$build_rc"
grep -E "error|Error" "$LOG/build.log" | head -40

(cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 400 ${TESTS:+-R "$TESTS"}) >"$LOG/ctest.log" 2>&1
test_rc=$?
echo "== ctest rc=$test_rc"
grep -E "tests passed|Failed|\*\*\*|Not Run" "$LOG/ctest.log" | head -30
"$BUILD_DIR"/tests/qat/test_qat --gtest_filter='*Cuda*' 2>&1 | tail -4 | tee "$LOG/cuda_test.txt"

# Training on the GPU.
if nvidia-smi -L >/dev/null 2>&1 && [ -x "$BUILD_DIR/apot" ]; then
  cifar=${CIFAR:-data/cifar10-jpeg}
  if [ -f "$cifar" ]; then
    mkdir -p /tmp/apot-cifar && tar xzf "$cifar" -C /tmp/apot-cifar && cifar=/tmp/apot-cifar
  fi
  "$BUILD_DIR"/tests/train/test_train --gtest_filter='Trainer.OnTheGpu*' 2>&1 | tail -4 | tee "$LOG/gpu_train_test.txt"
  # One schedule, two epochs each: the second epoch's images per second (the first warms cuDNN).
  for kind in fp apot; do
    "$BUILD_DIR"/apot train recipes/cifar10-resnet20-study.toml --device cuda --out "$LOG/gpu-epoch-$kind" \
      --set "data.spec=imagefolder:$cifar" --set data.workers=8 --set quant.kind=$kind --set optim.epochs=2 \
      >"$LOG/gpu-epoch-$kind.log" 2>&1
    echo "== GPU epoch, $kind: $(tail -3 "$LOG/gpu-epoch-$kind.log" | head -1)"
    cp "$LOG/gpu-epoch-$kind/metrics.jsonl" "$LOG/gpu-epoch-$kind.metrics.jsonl" 2>/dev/null
  done
  if [ -n "${PRETRAINED:-}" ]; then
    timeout "${GPU_SECONDS:-180}" "$BUILD_DIR"/apot train recipes/cifar10-resnet20-w4a4.toml --device cuda \
      --out "$LOG/gpu-paper-w4" --set "data.spec=imagefolder:$cifar" --set data.workers=8 --set "init=$PRETRAINED" \
      >"$LOG/gpu-paper-w4.log" 2>&1
    echo "== GPU, the paper's W4A4 recipe for ${GPU_SECONDS:-180} s: $(grep -c '^epoch' "$LOG/gpu-paper-w4.log") epochs"
    grep '^epoch' "$LOG/gpu-paper-w4.log" | tail -2
    cp "$LOG/gpu-paper-w4/metrics.jsonl" "$LOG/gpu-paper-w4.metrics.jsonl" 2>/dev/null
  fi
  rm -rf "$LOG"/gpu-*/  # checkpoints stay behind
fi

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
