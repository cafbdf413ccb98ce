#!/usr/bin/env bash
# A user's own network through the command: `apot cost` on a model file with a per-layer
# override; a short training run of the example recipe, export, `apot run --compare`; and one
# error line naming the node, exit code 2, for bad model files.
set -u
apot="$1"
root="$(cd "$(dirname "$0")/../.." && pwd)"
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

model="$root/recipes/models/fashion-mnist-small-cnn.toml"
check cost 0 "$apot" cost --model-file "$model" --input 28 --layers --layer conv2=8/8 --kind uniform --json
expect cost '"abits":8,[^}]*"name":"conv2",[^}]*"wbits":8'   # keys in alphabetical order
expect cost '"abits":4,[^}]*"name":"conv3",[^}]*"wbits":4'
check cost-bad-layer 2 "$apot" cost --model-file "$model" --layer nope=8/8
expect cost-bad-layer "'nope': no such node"; one_line cost-bad-layer

check train 0 "$apot" train "$root/recipes/fashion-mnist-small-cnn-w4a4.toml" --out "$tmp/run" --set optim.epochs=1 \
  --set run.max_steps_per_epoch=30 --set data.workers=1 --set 'quant.layers.conv2.weight_bits=3'
expect train "training small-cnn apot W4A4"
check export 0 "$apot" export --checkpoint "$tmp/run/best.ckpt" --out "$tmp/m.apot"
check run 0 "$apot" run "$tmp/m.apot" --data fashion-mnist --compare "$tmp/run/best.ckpt" --limit 300 --json
expect run '"agreement":(99\.[5-9]|100)'
expect run '"name":"sum","op":"add"'

# Bad model files: one line, naming the node, exit 2.
bad() {  # bad NAME PATTERN TOML
  printf 'name = "bad"\n[input]\nchannels = 1\n%s' "$3" >"$tmp/$1.toml"
  check "$1" 2 "$apot" cost --model-file "$tmp/$1.toml" --input 28
  expect "$1" "$2"; one_line "$1"
}
conv='[[layer]]
name = "a"
op = "conv"
out_channels = 4
kernel = 3
'
bad unknown-op "node 'b': unknown op 'warp'" "$conv"'[[layer]]
name = "b"
op = "warp"
'
bad dangling "node 'b': reads 'zz', which is not a layer" "$conv"'[[layer]]
name = "b"
op = "add"
inputs = ["a", "zz"]
'
bad cycle "node 'a': is part of a cycle" '[[layer]]
name = "a"
op = "add"
inputs = ["input", "b"]
[[layer]]
name = "b"
op = "add"
inputs = ["input", "a"]
'
bad shape "node 'b' \(add\): adds 'a' \(4x26x26\) and 'input' \(1x28x28\)" "$conv"'[[layer]]
name = "b"
op = "add"
inputs = ["a", "input"]
'
check missing 2 "$apot" cost --model-file "$tmp/none.toml"; one_line missing
# A state dict that does not fit the model file: missing and unexpected weights in one line.
printf 'name = "other"\n[input]\nchannels = 1\n%s[[layer]]\nname = "gap"\nop = "global_avg_pool"\n[[layer]]\nname = "fc"\nop = "linear"\nout_channels = 10\n' "$conv" >"$tmp/other.toml"
check eval-mismatch 2 "$apot" eval --checkpoint "$root/tests/fixtures/torch_files/tiny_cnn_state_dict.pt" \
  --model-file "$tmp/other.toml" --data fashion-mnist
expect eval-mismatch "missing a.weight"; one_line eval-mismatch

# ONNX files exported by PyTorch (tests/fixtures/make_onnx_files.py): eval, quantize, export and
# run, train from one; one line and exit 2 for an unsupported op, a dynamic size or data that
# does not fit, exit 1 for a corrupt file; nothing written on error.
onnx="$root/tests/fixtures/onnx"
check onnx-cost 0 "$apot" cost --model-file "$onnx/shortcut_a.onnx" --layers --json
expect onnx-cost '"input":28,"input_width":28'
expect onnx-cost '"name":"shortcut_a.Slice"|"arch":"shortcut_a"'
check onnx-eval 0 "$apot" eval --model "$onnx/ops_net.onnx" --data fashion-mnist --json
expect onnx-eval '"model":"ops_net fp32 \(imported ONNX model\)"'
check onnx-quantize 0 "$apot" quantize --model "$onnx/tiny_cnn.onnx" --data fashion-mnist --calib 256 --kind apot \
  --wbits 4 --abits 4 --method mse --grid 20 --out "$tmp/onnx-q.ckpt"
expect onnx-quantize "apot W4A4 \(mse\): test top-1"
check onnx-q-export 0 "$apot" export --checkpoint "$tmp/onnx-q.ckpt" --out "$tmp/onnx-q.apot"
check onnx-q-run 0 "$apot" run "$tmp/onnx-q.apot" --data fashion-mnist --compare "$tmp/onnx-q.ckpt" --limit 256 --json
expect onnx-q-run '"agreement":(99\.[5-9]|100)'
check onnx-train 0 "$apot" train "$root/recipes/fashion-mnist-small-cnn-w4a4.toml" --out "$tmp/onnx-run" \
  --set optim.epochs=1 --set run.max_steps_per_epoch=5 --set data.workers=1 --set "model.file=$onnx/tiny_cnn.onnx" \
  --set "init=$onnx/tiny_cnn.onnx"
expect onnx-train "initialised from the ONNX model"
expect onnx-train "training tiny_cnn apot W4A4"
check onnx-unsupported 2 "$apot" eval --model "$onnx/unsupported_op.onnx" --data fashion-mnist
one_line onnx-unsupported; expect onnx-unsupported "node '/1/Sigmoid': Sigmoid: op not supported"
check onnx-dynamic 2 "$apot" quantize --model "$onnx/dynamic_hw.onnx" --data fashion-mnist --out "$tmp/bad.ckpt"
one_line onnx-dynamic; expect onnx-dynamic "dynamic height"
check onnx-data 2 "$apot" quantize --model "$onnx/tiny_cnn.onnx" --data "imagefolder:$root/tests/fixtures/images" \
  --out "$tmp/bad.ckpt"
one_line onnx-data
head -c 5000 "$onnx/tiny_cnn.onnx" >"$tmp/cut.onnx"
check onnx-corrupt 1 "$apot" quantize --model "$tmp/cut.onnx" --data fashion-mnist --out "$tmp/bad.ckpt"
one_line onnx-corrupt; expect onnx-corrupt "not an ONNX model"
[ ! -e "$tmp/bad.ckpt" ] || { echo "FAIL onnx: wrote a checkpoint on error"; fail=1; }
exit $fail
