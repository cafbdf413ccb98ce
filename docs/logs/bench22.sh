#!/bin/bash
# Session 22 benchmark: the session-18 script's runs (every model, cold with caches flushed and
# warm with --back-to-back 5, one and two threads; the kernel cache starts empty) on models made
# here when missing: c4 and shuf are ResNet-20 and ShuffleNetV2 x0.5 (CIFAR) W4A4 APoT from the
# shared FP32 models by `apot quantize --method minmax` (their accuracy does not matter for
# timing); r18 and mbv2-224 are ResNet-18 and MobileNetV2 at 224, W4A4, trained for one step on
# 30 CIFAR test images resized to 256 and cropped to 224, as in sessions 17-21.
cd /work/main
B=./build/apot
export APOT_TUNE_CACHE=${BENCH_KERNEL_CACHE:-/tmp/bench22-kernels.json}
rm -f $APOT_TUNE_CACHE
ptq() {  # arch, state dict, mean, std, out
  [ -f "$5" ] && return
  $B quantize --model "$2" --arch "$1" --mean "$3" --std "$4" --data imagefolder:data/cifar10-jpeg --calib 128 \
    --kind apot --wbits 4 --abits 4 --method minmax --out "$5.ckpt" && $B export --checkpoint "$5.ckpt" --out "$5"
}
tiny() {  # arch, out
  [ -f "$2" ] && return
  if [ ! -d /tmp/tiny/train ]; then
    mkdir -p /tmp/tinysrc /tmp/tiny
    tar xzf ../shared/data/cifar10-images.tar.gz -C /tmp/tinysrc --wildcards 'test/*/000[0-2].jpg'
    cp -r /tmp/tinysrc/test /tmp/tiny/train && cp -r /tmp/tinysrc/test /tmp/tiny/test
  fi
  $B train recipes/imagenet-resnet18-w4a4.toml --set model.arch="$1" --set data.spec=imagefolder:/tmp/tiny \
    --set data.batch_size=8 --set data.val_size=8 --set data.workers=1 --set optim.epochs=1 \
    --set schedule.warmup_epochs=0 --set data.eval_batch_size=8 --set data.resize=256 --set data.crop=224 \
    --set run.max_steps_per_epoch=1 --out "$2.run" && $B export --checkpoint "$2.run/best.ckpt" --out "$2"
}
{
  ptq resnet20 ../shared/models/resnet20-cifar10.pt 0.485,0.456,0.406 0.229,0.224,0.225 /tmp/c4.apot
  ptq shufflenet_v2_x0_5_cifar ../shared/models/shufflenetv2_x0_5-cifar10.pt 0.4914,0.4822,0.4465 \
    0.2023,0.1994,0.2010 /tmp/shuf.apot
  tiny resnet18 /tmp/r18.apot
  tiny mobilenet_v2 /tmp/mbv2-224.apot
} >/dev/null 2>&1
date -u; git log -1 --format='commit %h'; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo
$B bench /tmp/c4.apot --batch 1,32 --threads 1,2
$B bench /tmp/c4.apot --batch 1 --threads 1,2 --back-to-back 5
$B bench /tmp/r18.apot --batch 1 --threads 1,2
$B bench /tmp/r18.apot --batch 1 --threads 1 --back-to-back 5
$B bench /tmp/shuf.apot --batch 1 --threads 1,2
$B bench /tmp/shuf.apot --batch 1 --threads 1 --back-to-back 5
$B bench /tmp/mbv2-224.apot --batch 1 --threads 1
$B bench /tmp/mbv2-224.apot --batch 1 --threads 1 --back-to-back 5
date -u
