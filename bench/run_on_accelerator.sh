#!/usr/bin/env bash
# Run the flaxsent benchmark on an accelerator host (NVIDIA GPU or Cloud TPU), one command.
#
#   bench/run_on_accelerator.sh            # default run (about 10 minutes on a CPU, less on GPU)
#   bench/run_on_accelerator.sh --full     # extra options go to `flaxsent bench`
#
# Installs flaxsent with its bench extras, the JAX build for the accelerator (pinned to the JAX
# version already installed, so jaxlib and its plugin match), then writes the reports to
# bench/results/<device>-<UTC date>/ and prints the Markdown table. Exit code: the bench's
# (0 ok, 1 a parity failure, 2 a usage error).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  accel=gpu
elif [ -e /dev/accel0 ] || [ -e /dev/vfio/0 ] || [ -n "${TPU_NAME:-}" ]; then
  accel=tpu
else
  accel=cpu
fi
echo "== accelerator: $accel" >&2

if [ "$accel" != gpu ]; then
  # PyPI's Linux torch wheel carries CUDA (gigabytes); a TPU or CPU host needs the CPU build.
  "$PY" -m pip install --quiet 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install --quiet -e '.[bench]'
jax_version=$("$PY" -c 'import jax; print(jax.__version__)')
case "$accel" in
  gpu) "$PY" -m pip install --quiet "jax[cuda12]==${jax_version}" ;;
  tpu) "$PY" -m pip install --quiet "jax[tpu]==${jax_version}" ;;
esac

# the device as JAX sees it, e.g. "NVIDIA-H100-80GB-HBM3" or "TPU-v5-lite"
device=$("$PY" -c 'import jax; d = jax.devices()[0]; print(d.device_kind if d.platform != "cpu" else "cpu")' \
  | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/--*/-/g; s/-$//')
if [ "$accel" != cpu ] && [ "$device" = cpu ]; then
  echo "== warning: JAX found no $accel (check the driver / libtpu); benchmarking on CPU" >&2
fi
out="bench/results/${device}-$(date -u +%Y%m%dT%H%MZ)"
echo "== writing $out" >&2
"$PY" -m flaxsent.bench --out "$out" "$@"   # the same as `flaxsent bench`
