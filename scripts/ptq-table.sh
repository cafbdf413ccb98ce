#!/usr/bin/env bash
# Post-training quantisation of the shared pretrained CIFAR-10 ResNet-20 (or MODEL/ARCH) for every
# kind x method x bit-width of the table in docs/RESULTS.md: 1,024 calibration images from the
# training split, evaluation on the JPEG test set. Resumable: a row whose JSON exists is skipped.
#   scripts/ptq-table.sh [OUT_DIR]    (default runs/ptq; APOT=build/apot, DATA=imagefolder:data/cifar10-jpeg)
# METHODS and W2_KINDS choose a part of the table (default all: "recon mse minmax", "apot uniform pot").
set -euo pipefail
cd "$(dirname "$0")/.."
apot=${APOT:-build/apot}
out=${1:-runs/ptq}
data=${DATA:-imagefolder:data/cifar10-jpeg}
model=${MODEL:-../shared/models/resnet20-cifar10.pt}
arch=${ARCH:-resnet20}
mkdir -p "$out"

quantize() {  # quantize KIND WBITS ABITS METHOD
  local name=$arch-$1-w$2a$3-$4
  [ -s "$out/$name.json" ] && { echo "ptq: $name is done"; return; }
  echo "ptq: $name"
  "$apot" quantize --model "$model" --arch "$arch" --data "$data" --mean 0.485,0.456,0.406 \
    --std 0.229,0.224,0.225 --calib 1024 --kind "$1" --wbits "$2" --abits "$3" --method "$4" \
    --out "$out/$name.ckpt" --json >"$out/$name.json.tmp" 2>"$out/$name.log"
  mv "$out/$name.json.tmp" "$out/$name.json"
}

quantize uniform 8 8 minmax
for bits in 4 3; do
  for method in ${METHODS:-recon mse minmax}; do
    for kind in apot uniform pot; do quantize "$kind" "$bits" "$bits" "$method"; done
  done
done
for kind in ${W2_KINDS:-apot uniform pot}; do quantize "$kind" 2 4 recon; done
for f in "$out"/"$arch"-*.json; do  # one line per row: quantisation, test top-1, calibration seconds
  sed -E 's/.*"calibration_seconds":([0-9.]+).*"quantization":"([^"]*)".*"test_top1":([0-9.]+).*/\2\t\3 %\t\1 s/' "$f"
done
