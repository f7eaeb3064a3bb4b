#!/usr/bin/env bash
# Fit the QF codebooks of the paper's Fig. 3 grid: the five (N_Q, b) pairs for each r = 0 codec of
# results/paper-df/train-grid.sh, on the channel outputs of the split's 1,050 validation images at
# the codec's SNR. Skips codecs whose codebooks exist.
#   NETSIM_CIFAR10=../shared/data/cifar10 bash results/paper-qf/fit-codebooks.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
for snr in -5 -10 -15; do
  for loss in mse msedhd; do
    codec="models/paper/djscc-df-r0-snrm${snr#-}-${loss}"
    [ -f "$codec-qf-2x2.json" ] && continue
    netsim train codebook --model "$codec.json" --snr "$snr" --split models/paper/cifar10-split-9450-1050-2100.json \
      --models-dir models/paper -q
  done
done
