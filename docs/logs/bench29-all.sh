#!/bin/bash
# Session 29 benchmark of every model: session 22's runs (docs/logs/bench22.sh: every model, cold
# with caches flushed and warm with --back-to-back 5, one and two threads; the kernel cache
# starts empty) on the Intel Xeon with AMX-INT8, after ResNet-18's first layer moved to AMX tiles.
D="$(dirname "$0")"
BENCH_KERNEL_CACHE=/tmp/bench29-all-kernels.json bash "$D/bench22.sh"
