#!/usr/bin/env bash
# The APoT vs uniform vs PoT study on CIFAR-10 JPEG from the shared pretrained ResNet-20, one
# schedule for all (recipes/cifar10-resnet20-study.toml, 10 epochs per step):
#   fp                                  full precision, from the pretrained model
#   KIND-w4 -> KIND-w3 -> KIND-w2       W4A4 from the pretrained model, then each step from the
#                                       previous step's best checkpoint, for apot, uniform, pot
# Resumable: a finished run (summary.json) is skipped, an interrupted one continues from its last
# checkpoint (--resume). Runs go one after another (2 cores). Usage:
#   scripts/study.sh [OUT_DIR]      (default runs/study; APOT=build/apot, DATA=imagefolder:data/cifar10-jpeg,
#                                    KINDS="apot uniform pot", FP=1: also the full-precision run,
#                                    ORDER=kind: each kind's chain in turn, or bits: all kinds at W4A4 first,
#                                    SET="key=value ...": more --set overrides for every run, e.g.
#                                    train.memory_format=contiguous to reproduce runs made before it)
set -euo pipefail
cd "$(dirname "$0")/.."
apot=${APOT:-build/apot}
out=${1:-runs/study}
data=${DATA:-imagefolder:data/cifar10-jpeg}
pretrained=${PRETRAINED:-../shared/models/resnet20-cifar10.pt}
recipe=recipes/cifar10-resnet20-study.toml
mkdir -p "$out"

train() {  # train NAME INIT KIND BITS
  local name=$1 init=$2 kind=$3 bits=$4 dir=$out/$1
  if [ -f "$dir/summary.json" ]; then echo "study: $name is done"; return; fi
  local resume=() extra=()
  [ -f "$dir/last.ckpt" ] && resume=(--resume)
  for kv in ${SET:-}; do extra+=(--set "$kv"); done
  echo "study: $name (kind $kind, W${bits}A${bits}, from $init) ${resume[*]}"
  "$apot" train "$recipe" --out "$dir" --set "data.spec=$data" --set "init=$init" --set "quant.kind=$kind" \
    --set "quant.weight_bits=$bits" --set "quant.act_bits=$bits" "${extra[@]}" "${resume[@]}" >>"$out/$name.log" 2>&1
}

[ "${FP:-1}" = 1 ] && train fp "$pretrained" fp 4
# One kind's whole chain before the next kind's (ORDER=bits: every kind at 4 bits first).
if [ "${ORDER:-kind}" = bits ]; then
  for bits in 4 3 2; do for kind in ${KINDS:-apot uniform pot}; do echo "$kind $bits"; done; done
else
  for kind in ${KINDS:-apot uniform pot}; do for bits in 4 3 2; do echo "$kind $bits"; done; done
fi | while read -r kind bits; do
  if [ "$bits" = 4 ]; then init=$pretrained; else init=$out/$kind-w$((bits + 1))/best.ckpt; fi
  train "$kind-w$bits" "$init" "$kind" "$bits" </dev/null
done
echo "study: all runs done in $out"
