#!/bin/bash
# Session 33 (issue 20): how far each unmet acceptance line is from its goal if one part of the
# AMX layers cost nothing. Builds, next to the tree's build/ (make build first), three variants
# of src/kernels/gemm_amx.cpp as of commit adc007b: noepi (the AMX layers' epilogue left out,
# docs/logs/exp33-noepi.patch), notile (their tile loads and tdpbusd left out,
# exp33-notile.patch) and none (both); each into its own copy of libapot_kernels.a and its own
# `apot` (the tree's link command), so that `apot bench` times each against oneDNN int8 in one
# process, as the acceptance runs do. The variants give wrong outputs: a measurement only.
# Every other layer (first layer, depthwise, Winograd or VNNI layers the tuner chose, pooling,
# the classifier) runs as in the tree; each variant chooses its kernels by measurement itself.
# Usage: docs/logs/exp33-bounds.sh (models from docs/logs/bench22.sh: /tmp/c4.apot,
# /tmp/r18.apot, /tmp/mbv2-224.apot). About 25 minutes.
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/exp33.XXXX)
cmd=$(cd "$ROOT/build" && ninja -t commands src/kernels/libapot_kernels.a | grep "gemm_amx.cpp" | head -1)
cmd=${cmd/-o src\/kernels\/CMakeFiles\/apot_kernels_objects.dir\/gemm_amx.cpp.o/-o $W\/gemm_amx.cpp.o}
cmd=${cmd//"$ROOT/src/kernels/gemm_amx.cpp"/"$W/src/kernels/gemm_amx.cpp"}
cmd=${cmd/"-I$ROOT/src/kernels"/"-I$W/src/kernels -I$ROOT/src/kernels"}
link=$(cd "$ROOT/build" && ninja -t commands apot | tail -1)
VARIANTS="orig noepi notile none"
for v in $VARIANTS; do
  mkdir -p $W/src/kernels && cp "$ROOT"/src/kernels/*.h $W/src/kernels/
  git -C "$ROOT" show adc007b:src/kernels/gemm_amx.cpp > $W/src/kernels/gemm_amx.cpp
  case $v in
    noepi | notile) (cd $W && patch -s -p1 < "$ROOT/docs/logs/exp33-$v.patch") ;;
    none) (cd $W && patch -s -p1 < "$ROOT/docs/logs/exp33-noepi.patch" && patch -s -p1 < "$ROOT/docs/logs/exp33-notile.patch") ;;
  esac
  (cd "$ROOT/build" && eval "$cmd")
  cp "$ROOT/build/src/kernels/libapot_kernels.a" $W/k-$v.a && ar r $W/k-$v.a $W/gemm_amx.cpp.o
  l=${link//src\/kernels\/libapot_kernels.a/$W\/k-$v.a}
  l=${l/-o apot /-o $W\/apot-$v }
  (cd "$ROOT/build" && eval "$l")
done
date -u; git -C "$ROOT" log -1 --format='commit %h'; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo
grep -m1 "^model\s" /proc/cpuinfo
line() { grep "thread(s):" | sed 's/ | LibTorch.*oneDNN int8/ | oneDNN int8/; s/ -> .*FP32 (best), / -> /; s/; engine .*//'; }
for round in 1 2; do
  for v in $VARIANTS; do
    # Each variant's own kernel cache: its choices are measured with its own AMX kernel (with
    # one cache for all, the variants ran the choices measured for orig in its first run).
    export APOT_TUNE_CACHE=$W/kernels-$v.json
    echo "== round $round, $v"
    echo -n "  ResNet-20 b1 warm: "; $W/apot-$v bench /tmp/c4.apot --batch 1 --threads 1 --back-to-back 5 | line
    echo -n "  ResNet-20 b32 cold: "; $W/apot-$v bench /tmp/c4.apot --batch 32 --threads 1 --reps 20 | line
    echo -n "  ResNet-18 b1 warm: "; $W/apot-$v bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5 --reps 40 | line
    echo -n "  ResNet-18 b1 cold: "; $W/apot-$v bench /tmp/r18.apot --batch 1 --threads 1 --reps 60 | line
    echo -n "  MobileNetV2 b1 warm: "; $W/apot-$v bench /tmp/mbv2-224.apot --batch 1 --threads 1 --back-to-back 5 --reps 30 | line
    echo -n "  MobileNetV2 b1 cold: "; $W/apot-$v bench /tmp/mbv2-224.apot --batch 1 --threads 1 --reps 40 | line
  done
done
date -u
rm -rf $W
