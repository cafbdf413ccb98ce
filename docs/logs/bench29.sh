#!/bin/bash
# Session 29 benchmark: ResNet-18 (the only model whose first layer is 7x7, the one the AMX first
# layer changes), cold and warm, one and two threads, per layer warm; the kernel cache starts
# empty. The models come from docs/logs/bench22.sh (run it first where /tmp/r18.apot is missing).
# The layer table is taken twice: with the first layer on AMX tiles and with APOT_AMX=0 (every
# kernel on AVX-512 VNNI), for the first layer's line.
cd /work/main
B=./build/apot
export APOT_TUNE_CACHE=${BENCH_KERNEL_CACHE:-/tmp/bench29-kernels.json}
rm -f $APOT_TUNE_CACHE
date -u; git log -1 --format='commit %h'; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo
grep -m1 -o "amx_int8" /proc/cpuinfo
$B bench /tmp/r18.apot --batch 1 --threads 1,2
$B bench /tmp/r18.apot --batch 1 --threads 1,2 --back-to-back 5
$B bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5 --layers
APOT_AMX=0 APOT_TUNE_CACHE=/tmp/bench29-noamx.json $B bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5 --layers | grep -E "engine |conv1 "
rm -f /tmp/bench29-noamx.json
date -u
