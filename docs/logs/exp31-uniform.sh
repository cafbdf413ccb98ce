#!/bin/bash
# Session 31 experiment: what the exact APoT requantisation costs inside whole networks. Two
# builds of `apot`: the exact one (main at aa1c5d9) and one with docs/logs/exp31-uniform-epilogue.patch
# applied (the 4-bit search replaced by a uniform rounding of the same scaled value: wrong codes,
# not a product, only a measurement). Made with
#   cp build/apot /tmp/s31/apot_exact; git apply docs/logs/exp31-uniform-epilogue.patch;
#   ninja -C build apot; cp build/apot /tmp/s31/apot_uniform; git checkout src/kernels/avx512_epilogue.h
# Each binary runs `apot bench` against oneDNN int8 in its own process; the two alternate, twice.
# Models: docs/logs/bench22.sh.
cd /work/main
for round in 1 2; do
for bin in exact uniform; do
  export APOT_TUNE_CACHE=/tmp/s31/k-$bin.json
  echo "=== round $round $bin $(date -u +%T)"
  /tmp/s31/apot_$bin bench /tmp/mbv2-224.apot --batch 1 --threads 1 --back-to-back 5
  /tmp/s31/apot_$bin bench /tmp/mbv2-224.apot --batch 1 --threads 1
  /tmp/s31/apot_$bin bench /tmp/r18.apot --batch 1 --threads 1
  /tmp/s31/apot_$bin bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5
  /tmp/s31/apot_$bin bench /tmp/c4.apot --batch 32 --threads 1
  /tmp/s31/apot_$bin bench /tmp/c4.apot --batch 1 --threads 1 --back-to-back 5
done; done
