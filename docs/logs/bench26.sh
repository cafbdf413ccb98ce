#!/bin/bash
# Session 26 benchmark: session 22's runs (docs/logs/bench22.sh: every model, cold with caches
# flushed and warm with --back-to-back 5, one and two threads; the kernel cache starts empty; the
# models made where missing), with a kernel cache of its own. The first run on an Intel Xeon
# with AMX-INT8, where the tuning may choose the AMX kernel and oneDNN int8 runs AMX as well.
BENCH_KERNEL_CACHE=/tmp/bench26-kernels.json exec bash "$(dirname "$0")/bench22.sh"
