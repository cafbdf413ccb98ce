#!/bin/bash
# Session 19 benchmark: every model, cold and warm, one and two threads
cd /work/main
export APOT_TUNE_CACHE=/tmp/bench19-kernels.json
rm -f $APOT_TUNE_CACHE
B=./build/apot
date -u; git log -1 --format='commit %h'; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo
$B bench runs/study/apot-w4/model.apot --batch 1,32 --threads 1,2
$B bench runs/study/apot-w4/model.apot --batch 1 --threads 1,2 --back-to-back 5
$B bench /tmp/r18.apot --batch 1 --threads 1,2
$B bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5
$B bench runs/shuf/apot-w4-kd/model.apot --batch 1 --threads 1,2
$B bench runs/shuf/apot-w4-kd/model.apot --batch 1 --threads 1 --back-to-back 5
$B bench /tmp/mbv2-224.apot --batch 1 --threads 1
$B bench /tmp/mbv2-224.apot --batch 1 --threads 1 --back-to-back 5
date -u
