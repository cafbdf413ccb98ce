#!/usr/bin/env bash
# Installs every system package apot needs (Debian bookworm). Idempotent: quiet and fast when
# everything is already there. Run as root, or with sudo available.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev              # LibTorch 1.13 (CPU): QAT ops, models, training
  dataset-fashion-mnist     # default data set of the main job
  libgtest-dev libgmock-dev # unit tests
  libbenchmark-dev          # micro-benchmarks under bench/
  libcli11-dev              # command-line parsing (header-only)
  nlohmann-json3-dev        # JSON output and metadata
  libfmt-dev                # formatting
  libtomlplusplus-dev       # TOML recipes
  libutfcpp-dev             # UTF-8 decoding (the TOML text made ASCII for toml++)
  libturbojpeg0-dev libpng-dev zlib1g-dev  # JPEG (TurboJPEG API), PNG, gzip'd IDX
  clang-14 libclang-rt-14-dev  # libFuzzer targets
  libdnnl-dev               # oneDNN: the int8 baseline of the engine benchmark
  libxxhash-dev             # section checksums of the .apot format
  libplplot-dev             # the plots of apot report (its svg device)
  libonnx-dev libprotobuf-dev  # ONNX import (apot eval / quantize / train --model net.onnx)
  libgloo-dev               # the Gloo headers of c10d (data-parallel training, apot train --nproc)
  chromium-headless-shell   # the test that opens apot report's page as a person would
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
