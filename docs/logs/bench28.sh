#!/bin/bash
# Session 28 benchmark: session 22's runs (docs/logs/bench22.sh: every model, cold with caches
# flushed and warm with --back-to-back 5, one and two threads; the kernel cache starts empty) on
# the Intel Xeon with AMX-INT8, after the AMX kernel's epilogue was inlined per shape.
D="$(dirname "$0")"
BENCH_KERNEL_CACHE=/tmp/bench28-kernels.json bash "$D/bench22.sh"
