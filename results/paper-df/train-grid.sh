#!/usr/bin/env bash
# Train the 24 DF multi-hop codecs of the paper's Fig. 2 grid (r = 0..3 relays x SNR -5/-10/-15 dB
# x loss mse / mse+dhd) on the paper's CIFAR-10 split, two at a time, one thread each.
# Re-running skips finished models and resumes interrupted ones from their last epoch.
#   NETSIM_CIFAR10=../shared/data/cifar10 bash results/paper-df/train-grid.sh [JOBS] [EPOCHS]
# Deviation from the paper (Adam 1e-4, lr x0.95/epoch, until convergence): 2 CPU cores give
# about an hour and a half for all 24, so every model gets the same short recipe: 4 epochs (37,800
# images seen), Adam 1e-3, lr x0.9/epoch.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${1:-2}
EPOCHS=${2:-4}
SPLIT=models/paper/cifar10-split-9450-1050-2100.json
mkdir -p runs/train/paper runs/logs
[ -f "$SPLIT" ] || netsim train split "$SPLIT"
jobs=()
for snr in -5 -10 -15; do
  for r in 0 1 2 3; do
    for loss in mse mse+dhd; do
      name="djscc-df-r${r}-snrm${snr#-}-${loss/+/}"
      [ -f "models/paper/$name.json" ] && continue
      ck="runs/train/paper/$name"
      resume=""; [ -f "$ck/checkpoint.json" ] && resume="--resume"
      hasher=""; [ "$loss" = "mse+dhd" ] && hasher="--hasher models/dhd-cifar10-64.json"
      jobs+=("netsim train jscc --split $SPLIT --name $name --relays $r --size small --snr $snr --loss $loss $hasher \
--epochs $EPOCHS --lr 1e-3 --lr-gamma 0.9 --seed 0 --models-dir models/paper --checkpoint-dir $ck --threads 1 -q $resume \
> runs/logs/$name.log 2>&1 && echo done $name || echo FAILED $name")
    done
  done
done
printf '%s\0' "${jobs[@]}" | xargs -0 -P "$JOBS" -I{} bash -c {}
# Two-stage variants of the r = 3 mse+dhd codecs (the one-stage ones stay on the mean-image
# plateau): the same recipe, started from the trained r = 3 mse codec of the same SNR.
for snr in -5 -10 -15; do
  name="djscc-df-r3-snrm${snr#-}-msedhd-warm"
  [ -f "models/paper/$name.json" ] && continue
  ck="runs/train/paper/$name"; resume=""; [ -f "$ck/checkpoint.json" ] && resume="--resume"
  netsim train jscc --split $SPLIT --name $name --relays 3 --size small --snr $snr --loss mse+dhd \
    --hasher models/dhd-cifar10-64.json --init "models/paper/djscc-df-r3-snrm${snr#-}-mse.json" --epochs $EPOCHS \
    --lr 1e-3 --lr-gamma 0.9 --seed 0 --models-dir models/paper --checkpoint-dir $ck --threads 2 -q $resume
done
