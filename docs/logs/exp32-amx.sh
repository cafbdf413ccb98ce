#!/bin/bash
# Session 32 (issue 20): where the AMX kernel's time goes on an Intel Xeon with AMX-INT8.
# Builds, next to the tree's build/ (make build first), variants of src/kernels/gemm_amx.cpp
# from the patches here, each into its own copy of libapot_kernels.a, and links two drivers per
# variant: docs/logs/exp32-layer.cpp (conv_u8s8 on one layer, AMX schedule, one thread, best of
# 300-3000 calls, FNV hash of the output codes) and docs/logs/exp32-driver.cpp (a whole model by
# Model::run_pixels, best of N). Variants: orig (the kernel as the session started, commit
# 11a2747); noepi and notile (the epilogue or the tiles left out: wrong outputs, a measurement
# of each part alone); block64 and block48 (one block of 16 channels: B tiles kept in tmm5-7,
# 64 or 48 pixels a step); flat-sums (no clamp on the sums' rows, the tile rows' places kept
# without a division: kept, commit e583195). Then the AMX/vector overlap loop
# (exp32-amx-overlap.cpp). Usage: docs/logs/exp32-amx.sh [model.apot, default /tmp/c4.apot]
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=${1:-/tmp/c4.apot}
W=$(mktemp -d /tmp/exp32.XXXX)
export APOT_TUNE_CACHE=$W/kernels.json
B=$ROOT/build/src
cmd=$(cd "$ROOT/build" && ninja -t commands src/kernels/libapot_kernels.a | grep "gemm_amx.cpp" | head -1)
cmd=${cmd/-o src\/kernels\/CMakeFiles\/apot_kernels_objects.dir\/gemm_amx.cpp.o/-o $W\/gemm_amx.cpp.o}
cmd=${cmd//"$ROOT/src/kernels/gemm_amx.cpp"/"$W/src/kernels/gemm_amx.cpp"}
cmd=${cmd/"-I$ROOT/src/kernels"/"-I$W/src/kernels -I$ROOT/src/kernels"}
VARIANTS="orig noepi notile block64 block48 flat-sums"
for v in $VARIANTS; do
  # The patches apply to the kernel as the session started (commit 11a2747); the headers it
  # includes are the tree's (unchanged since).
  mkdir -p $W/src/kernels && cp "$ROOT"/src/kernels/*.h $W/src/kernels/
  git -C "$ROOT" show 11a2747:src/kernels/gemm_amx.cpp > $W/src/kernels/gemm_amx.cpp
  [ $v = orig ] || (cd $W && patch -s -p1 < "$ROOT/docs/logs/exp32-$v.patch")
  (cd "$ROOT/build" && eval "$cmd")
  cp $B/kernels/libapot_kernels.a $W/k.a && ar r $W/k.a $W/gemm_amx.cpp.o
  g++ -O2 -std=c++20 -I"$ROOT/include" -I"$ROOT/tests/kernels" "$ROOT/docs/logs/exp32-layer.cpp" $W/k.a \
    $B/levels/libapot_levels.a -lgtest -fopenmp -o $W/layer-$v
  g++ -O2 -std=c++17 -I"$ROOT/include" "$ROOT/docs/logs/exp32-driver.cpp" $B/runtime/libapot_runtime.a \
    $B/graph/libapot_graph.a $W/k.a $B/levels/libapot_levels.a -fopenmp -lxxhash -lfmt -o $W/model-$v
done
g++ -O2 -mavx512f -mamx-tile -mamx-int8 -mfma "$ROOT/docs/logs/exp32-amx-overlap.cpp" -o $W/overlap
date -u; git -C "$ROOT" log -1 --format='commit %h'; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo
grep -m1 "^model\s" /proc/cpuinfo
[ -f "$MODEL" ] && $W/model-orig "$MODEL" 1 200 >/dev/null  # fill the kernel cache once
for round in 1 2; do
  for v in $VARIANTS; do
    echo "== round $round, $v: layers (1 thread, AMX)"; $W/layer-$v
    [ -f "$MODEL" ] && { echo "   $MODEL batch 1:"; $W/model-$v "$MODEL" 1 3000; }
  done
done
echo "== AMX beside the vector units (TSC ticks per iteration)"; $W/overlap
date -u
rm -rf $W
