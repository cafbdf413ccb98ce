#!/usr/bin/env bash
# The deploy path end to end through the command: a (very) short training run, `apot export`,
# `apot run --compare` and `apot bench --json --layers`, and one error line with the right exit
# code for bad input to them; `apot report` on the run.
set -u
apot="$1"
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

recipe="$(dirname "$0")/../../recipes/fashion-mnist-resnet20-w4a4.toml"
check train 0 "$apot" train "$recipe" --out "$tmp/run" --set optim.epochs=1 --set run.max_steps_per_epoch=3 \
  --set data.workers=1
check report-curves 0 "$apot" report "$tmp/run" --out "$tmp/report.html" --no-layers
[ "$(grep -o '<svg' "$tmp/report.html" | wc -l)" -eq 5 ] || { echo "FAIL report: want 5 plots"; fail=1; }
[ ! -e "$tmp/run/layers.json" ] || { echo "FAIL report: --no-layers probed"; fail=1; }
check report 0 "$apot" report "$tmp/run" --out "$tmp/report.html" --images 32
expect report "wrote .*report\.html \(1 run"
# 5 training plots, SQNR per layer, weights of 20 layers, inputs of the 18 quantised ones.
[ "$(grep -o '<svg' "$tmp/report.html" | wc -l)" -eq 44 ] || { echo "FAIL report: want 44 plots"; fail=1; }
grep -q '"images":32' "$tmp/run/layers.json" || { echo "FAIL report: no layers.json of 32 images"; fail=1; }
check report-json 0 "$apot" report "$tmp/run" --json
expect report-json '"alphas":\{"[a-z0-9.]+_alpha"'
expect report-json '"output_sqnr_db":[0-9.]+'
check report-bad-data 1 "$apot" report "$tmp/run" --json --reprobe --data imagefolder:"$tmp/none"; one_line report-bad-data
check report-missing 1 "$apot" report "$tmp/none" --out "$tmp/r.html"; one_line report-missing
expect report-missing "not a run directory"
check report-no-out 2 "$apot" report "$tmp/run"; one_line report-no-out
# Post-training quantisation of the trained model, then the usual path from its checkpoint.
check quantize 0 "$apot" quantize --model "$tmp/run/best.ckpt" --kind pot --wbits 3 --abits 3 --calib 256 --method recon --iters 10 \
  --out "$tmp/q.ckpt"
expect quantize "pot W3A3 \(recon\): test top-1 [0-9.]+ %"
expect quantize "wrote .*q\.ckpt"
check quantize-eval 0 "$apot" eval --checkpoint "$tmp/q.ckpt" --data fashion-mnist
expect quantize-eval "pot W3A3 on fashion-mnist"
check quantize-export 0 "$apot" export --checkpoint "$tmp/q.ckpt" --out "$tmp/q.apot"
check quantize-run 0 "$apot" run "$tmp/q.apot" --data fashion-mnist --compare "$tmp/q.ckpt" --limit 256 --json
expect quantize-run '"agreement"'
# 8-bit activations run in LibTorch only: export refuses them with one line naming a layer.
check quantize-a8 0 "$apot" quantize --model "$tmp/run/best.ckpt" --kind uniform --wbits 8 --abits 8 --calib 128 \
  --method minmax --out "$tmp/q8.ckpt"
check quantize-a8-export 1 "$apot" export --checkpoint "$tmp/q8.ckpt" --out "$tmp/q8.apot"
one_line quantize-a8-export; expect quantize-a8-export "layer .*: its input has 256 uniform-a8 levels; the engine"
[ ! -e "$tmp/q8.apot" ] || { echo "FAIL quantize-a8-export: wrote a file"; fail=1; }
check quantize-small 2 "$apot" quantize --model "$tmp/run/best.ckpt" --calib 64 --out "$tmp/bad.ckpt"
one_line quantize-small; expect quantize-small "smaller than one batch"
check quantize-missing 2 "$apot" quantize --model "$tmp/none.pt" --out "$tmp/bad.ckpt"; one_line quantize-missing
touch "$tmp/m.pt"
check quantize-no-arch 2 "$apot" quantize --model "$tmp/m.pt" --data fashion-mnist --out "$tmp/bad.ckpt"
expect quantize-no-arch "needs --arch"
[ ! -e "$tmp/bad.ckpt" ] || { echo "FAIL quantize: wrote a checkpoint on error"; fail=1; }
check export 0 "$apot" export --checkpoint "$tmp/run/best.ckpt" --out "$tmp/m.apot"
expect export "wrote .*m\.apot"
check run 0 "$apot" run "$tmp/m.apot" --data fashion-mnist --compare "$tmp/run/best.ckpt" --limit 256 --json
expect run '"agreement"'
expect run '"name":"layer1.0.conv1"'
expect run '"name":"layer3.2","op":"add"'
check bench 0 "$apot" bench "$tmp/m.apot" --batch 1,2 --threads 1,2 --reps 2 --json --layers
for key in engine_ms libtorch_fp32_module_ms libtorch_fp32_onednn_ms speedup_vs_fp32 peak_gmacs_per_s \
           '"layer":"layer3.2.conv2"' '"load_ms"' '"tuning":"' '"kernel":"(avx|scalar)'; do
  expect "bench $key" "$key"
done
if grep -q '"onednn_int8_ms"' <<<"$out"; then  # built with oneDNN: the whole network and its layers alone
  expect "bench int8 layers" '"onednn_int8_weight_layers_ms"'
  expect "bench int8 ratio" '"speedup_vs_onednn_int8_weight_layers"'
fi
check bench-text 0 "$apot" bench "$tmp/m.apot" --batch 1 --threads 1 --reps 1
expect bench-text "engine +[0-9.]+ ms"
check bench-warm 0 "$apot" bench "$tmp/m.apot" --batch 1 --threads 1 --reps 2 --back-to-back 3 --json
expect bench-warm '"back_to_back":3'
# The engine's kernel choice (APOT_TUNE): off, and a value that is none of 0, 1, force.
APOT_TUNE=0 check bench-untuned 0 "$apot" bench "$tmp/m.apot" --batch 1 --threads 1 --reps 1 --json
expect bench-untuned '"tuning":"off"'
APOT_TUNE=sometimes check bench-tune 1 "$apot" bench "$tmp/m.apot" --batch 1 --threads 1 --reps 1
expect bench-tune "APOT_TUNE=sometimes is not one of 0, 1, force"; one_line bench-tune
check bench-tune-flag 0 "$apot" bench "$tmp/m.apot" --batch 1 --threads 1 --reps 1 --json --tune 0
expect bench-tune-flag '"tuning":"off"'
check run-tune-bad 2 "$apot" run "$tmp/m.apot" --data fashion-mnist --tune sometimes; one_line run-tune-bad

head -c 100 "$tmp/m.apot" >"$tmp/truncated.apot"
check bench-truncated 1 "$apot" bench "$tmp/truncated.apot";  expect bench-truncated "truncated"; one_line bench-truncated
check run-truncated 1 "$apot" run "$tmp/truncated.apot" --data fashion-mnist; one_line run-truncated
check bench-missing 2 "$apot" bench "$tmp/none.apot";          one_line bench-missing
check bench-batch 2 "$apot" bench "$tmp/m.apot" --batch 0;     one_line bench-batch
check bench-b2b 2 "$apot" bench "$tmp/m.apot" --back-to-back 0; one_line bench-b2b
check run-data 2 "$apot" run "$tmp/m.apot" --data nosuchset;   one_line run-data
exit $fail
