#!/usr/bin/env bash
# Data-parallel training through the command (c10d, Gloo): `apot train --nproc 2` writes one run
# directory from rank 0; the same job started rank by rank with torchrun's variables works the
# same; a killed rank ends the job with one error line within APOT_DIST_TIMEOUT; --resume with
# one process continues from the last checkpoint. Small CNN on Fashion-MNIST, a few steps.
set -u
apot="$1"
root="$(cd "$(dirname "$0")/../.." && pwd)"
fail=0
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
recipe="$root/recipes/fashion-mnist-small-cnn-w4a4.toml"
small=(--set data.batch_size=32 --set data.workers=1 --set data.val_size=500 --set run.max_steps_per_epoch=8
       --set run.threads=1)

check nproc 0 "$apot" train "$recipe" --nproc 2 --out "$tmp/a" --set optim.epochs=2 "${small[@]}"
expect nproc "2 ranks x batch 32 = global batch 64"
expect nproc "^epoch 2/2: "
[ "$(grep -c '"ranks":2' "$tmp/a/metrics.jsonl")" -eq 2 ] || { echo "FAIL nproc: metrics.jsonl"; fail=1; }
[ -f "$tmp/a/summary.json" ] || { echo "FAIL nproc: no summary.json"; fail=1; }

# The same job as torchrun starts it: one process per rank with RANK, WORLD_SIZE, MASTER_*.
port=$((20000 + RANDOM % 20000))
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$apot" train "$recipe" --out "$tmp/b" --set optim.epochs=2 "${small[@]}" >"$tmp/rank$r.log" 2>&1 &
done
wait
grep -q "^epoch 2/2: " "$tmp/rank0.log" || { echo "FAIL torchrun-style: $(cat "$tmp/rank0.log")"; fail=1; }
[ ! -s "$tmp/rank1.log" ] || { echo "FAIL torchrun-style: rank 1 wrote $(cat "$tmp/rank1.log")"; fail=1; }
cmp -s <(grep -o '"test_top1":[0-9.]*' "$tmp/a/metrics.jsonl") <(grep -o '"test_top1":[0-9.]*' "$tmp/b/metrics.jsonl") ||
  { echo "FAIL torchrun-style: other results than --nproc 2"; fail=1; }

# Mismatched recipes between ranks: one clear line.
port=$((20000 + RANDOM % 20000))
RANK=1 WORLD_SIZE=2 MASTER_PORT=$port "$apot" train "$recipe" --out "$tmp/c" "${small[@]}" --set optim.lr=0.5 \
  >"$tmp/c1.log" 2>&1 &
check mismatch 1 env RANK=0 WORLD_SIZE=2 MASTER_PORT=$port "$apot" train "$recipe" --out "$tmp/c" "${small[@]}"
wait
expect mismatch "different recipes"; one_line mismatch

# Kill rank 1 after the first checkpoint: one error line, well within the timeout.
APOT_DIST_TIMEOUT=20 "$apot" train "$recipe" --nproc 2 --out "$tmp/d" --set optim.epochs=30 "${small[@]}" \
  >"$tmp/d.log" 2>"$tmp/d.err" &
launcher=$!
for _ in $(seq 600); do [ -f "$tmp/d/last.ckpt" ] && break; sleep 0.1; done
ranks=($(pgrep -P $launcher))
[ ${#ranks[@]} -eq 2 ] || { echo "FAIL kill: ranks ${ranks[*]}"; fail=1; }
start=$SECONDS
kill -9 "${ranks[1]}"
wait $launcher; rc=$?
[ $rc -ne 0 ] || { echo "FAIL kill: the job succeeded"; fail=1; }
[ $((SECONDS - start)) -lt 20 ] || { echo "FAIL kill: took $((SECONDS - start)) s"; fail=1; }
out=$(cat "$tmp/d.err"); one_line kill; expect kill "rank 1 was killed by signal 9|rank 0: .*another rank stopped"
[ -z "$(pgrep -P $launcher)" ] || { echo "FAIL kill: ranks left running"; fail=1; }

# torchrun --max-restarts starts the group again with TORCHELASTIC_RESTART_COUNT=1: it continues
# from the last checkpoint without --resume.
killed_epochs=$(grep -c '"ranks":2' "$tmp/d/metrics.jsonl")
port=$((20000 + RANDOM % 20000))
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port TORCHELASTIC_RESTART_COUNT=1 \
    "$apot" train "$recipe" --out "$tmp/d" --set optim.epochs=30 --set run.stop_after_epoch=$((killed_epochs + 1)) \
    "${small[@]}" >"$tmp/r$r.log" 2>&1 &
done
wait
out=$(cat "$tmp/r0.log")
expect restart "restart 1 of the job .*continuing from"
expect restart "resuming .* after epoch $killed_epochs"
expect restart "^epoch $((killed_epochs + 1))/30: "
# ... and reports what a job that was never stopped reports, epoch by epoch (every rank evaluates
# rank 0's batch-norm statistics, the ones the checkpoint keeps).
"$apot" train "$recipe" --nproc 2 --out "$tmp/e" --set optim.epochs=30 --set run.stop_after_epoch=$((killed_epochs + 1)) \
  "${small[@]}" >/dev/null 2>&1
cmp -s <(grep -o '"test_top1":[0-9.]*' "$tmp/d/metrics.jsonl") <(grep -o '"test_top1":[0-9.]*' "$tmp/e/metrics.jsonl") ||
  { echo "FAIL restart: other test accuracies than an uninterrupted job"; fail=1; }

# Resume with one process from the two-rank job's last checkpoint.
done_epochs=$(grep -c '"ranks":2' "$tmp/d/metrics.jsonl")
check resume 0 "$apot" train "$recipe" --out "$tmp/d" --set optim.epochs=$((done_epochs + 1)) "${small[@]}" --resume
expect resume "resuming .* after epoch $done_epochs"
expect resume "^epoch $((done_epochs + 1))/$((done_epochs + 1)): "
exit $fail
