#!/bin/bash
# Session 25 benchmark: session 22's runs (docs/logs/bench22.sh: every model, cold with caches
# flushed and warm with --back-to-back 5, one and two threads; the kernel cache starts empty; the
# models made where missing), with a kernel cache of its own.
BENCH_KERNEL_CACHE=/tmp/bench25-kernels.json exec bash "$(dirname "$0")/bench22.sh"
