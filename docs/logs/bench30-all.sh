#!/bin/bash
# Session 30 benchmark of every model: session 22's runs (docs/logs/bench22.sh: every model, cold
# with caches flushed and warm with --back-to-back 5, one and two threads; the kernel cache
# starts empty) on the Intel Xeon with AMX-INT8, after the AVX-512 epilogue's packed code stores.
D="$(dirname "$0")"
BENCH_KERNEL_CACHE=/tmp/bench30-all-kernels.json bash "$D/bench22.sh"
