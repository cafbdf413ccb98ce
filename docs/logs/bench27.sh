#!/bin/bash
# Session 27 benchmark: session 22's runs (docs/logs/bench22.sh: every model, cold with caches
# flushed and warm with --back-to-back 5, one and two threads; the kernel cache starts empty) on
# an Intel Xeon with AMX-INT8, after the epilogue's cell lookup became one vpermb; then
# MobileNetV2 warm again with APOT_VBMI=0 (the lookup as before), each with a kernel cache of its own.
D="$(dirname "$0")"
BENCH_KERNEL_CACHE=/tmp/bench27-kernels.json bash "$D/bench22.sh"
echo "== APOT_VBMI=0 (vpermt2w, as before this session) =="
rm -f /tmp/bench27-novbmi.json
APOT_VBMI=0 APOT_TUNE_CACHE=/tmp/bench27-novbmi.json ./build/apot bench /tmp/mbv2-224.apot --batch 1 --threads 1 --back-to-back 5
