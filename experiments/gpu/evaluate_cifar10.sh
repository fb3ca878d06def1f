#!/usr/bin/env bash
# The CIFAR-10 evaluation (experiments/evaluate_cifar10.py) on one GPU, in under 10 minutes:
# trains 2CONV from seeds 0, 1 and 2 (5 epochs each; the checkpoints are reused when
# present), then every method's maps and scores on 200 test images per seed, resumable.
#
#   CIFAR10_ZIP=/path/to/cifar10-jpeg.zip OUT=results bash experiments/gpu/evaluate_cifar10.sh
#
# PYTHON names the interpreter (default: python), LIMIT the time limit in seconds
# (default 480), CACHE the resumable cache folder.
#
# Needs jax with CUDA (pip install -U "jax[cuda12]") and the lossy JPEG copy of CIFAR-10
# (or the official data in the data dir: then leave CIFAR10_ZIP unset). A run stopped by
# the time limit resumes where it stopped: start it again with the same arguments.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs}
CACHE=${CACHE:-runs/evaluation_cache_cifar10}
SOURCE=()
if [[ -n "${CIFAR10_ZIP:-}" ]]; then
  SOURCE=(--source images --images-path "$CIFAR10_ZIP")
fi
PYTHON=${PYTHON:-python}
"$PYTHON" -c "import jax; d = jax.devices()[0]; print('devices:', jax.devices()); \
assert d.platform == 'gpu', 'no GPU: this script is for one GPU (the CPU run is the same command)'"
# 8 minutes for the whole command, so that a slow start still ends inside 10 minutes;
# `timeout` stops it cleanly and a second run resumes from the cache.
timeout --signal=INT "${LIMIT:-480}" "$PYTHON" experiments/evaluate_cifar10.py "${SOURCE[@]}" \
  --seeds 0 1 2 --epochs 5 --num-images 200 --sweep-images 100 --draws 3 \
  --batch-size-maps 100 --batch-size 128 --no-progress \
  --cache "$CACHE" --out "$OUT" "$@"
