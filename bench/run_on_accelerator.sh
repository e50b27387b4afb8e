#!/usr/bin/env bash
# Run the flaxsent benchmark on an accelerator host (NVIDIA GPU or Cloud TPU), one command,
# with no package registry needed.
#
#   bench/run_on_accelerator.sh                 # the default run (a few minutes on a GPU)
#   bench/run_on_accelerator.sh --repeats 20    # extra options go to `flaxsent bench`
#   RESULTS_ROOT=/somewhere bench/run_on_accelerator.sh
#
# The host must already hold flaxsent's dependencies (jax with its GPU/TPU plugin, flax,
# torch, transformers, tokenizers, safetensors, matplotlib, tqdm, psutil): accelerator images
# usually do, and they often reach no package registry. So flaxsent itself is installed with
# `pip install --no-deps --no-build-isolation -e .` against what is there; wheels carried in
# `.whl/` (if that folder exists) are installed first into /tmp/flaxsent-site, for anything the
# image lacks. Nothing is fetched.
#
# Then it checks that JAX sees the accelerator (and stops, exit 3, before spending time if it
# does not), and runs the bench: PyTorch fp32 (the reference) at its best and with bf16 and
# fp16 autocast, flaxsent fp32 at 'highest' precision (exact, held to 1e-4), fp32 at the
# backend's default precision (TF32 on NVIDIA GPUs), bf16 and int8; the cold-start probes of
# the default plan; and the training step benchmark. On an accelerator the embedded corpus is
# 872 x 64 = 55,808 sentences (`--sentences N` to change it), so a pass lasts seconds; each
# strategy's model TFLOP/s and MFU (against the GPU's published peak) are reported.
#
# The ONNX Runtime rows (ort-sorted, flax-ort) are SKIPPED here, with a note in the report,
# when onnxruntime is not installed (this script installs nothing from a registry: carry its
# wheels in .whl/ to have them), and also when onnxruntime has no provider for this
# accelerator (the CPU-only onnxruntime on a GPU host): a CPU row beside GPU rows says nothing.
#
# Reports go to $RESULTS_ROOT/<device>-<UTC time>/{inference,cold-start,train} (default
# RESULTS_ROOT: bench/results). Exit code: non-zero if any of the three failed (the bench's 1:
# a parity failure, an int8 or bf16 row below its argmax agreement included, or a strategy that
# failed to run; 2: a usage error), 3 when no accelerator is seen, 4 a missing dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS_ROOT=${RESULTS_ROOT:-bench/results}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  accel=gpu
elif [ -e /dev/accel0 ] || [ -e /dev/vfio/0 ] || [ -n "${TPU_NAME:-}" ]; then
  accel=tpu
else
  accel=cpu
fi
echo "== accelerator: $accel" >&2

if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing carried wheels from .whl/" >&2
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/flaxsent-site .whl/*.whl
  export PYTHONPATH=/tmp/flaxsent-site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -m pip install -q --no-deps --no-build-isolation -e . >&2

missing=$("$PY" - <<'EOF'
import importlib.util
need = ["jax", "flax", "numpy", "safetensors", "tokenizers", "transformers", "huggingface_hub",
        "tqdm", "psutil", "torch", "matplotlib"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "== missing on this host: $missing. Carry their wheels in .whl/ (pip download --no-deps" \
       "--only-binary=:all: -d .whl NAME==VERSION on a machine with a registry) and rerun." >&2
  exit 4
fi

# the device as JAX sees it, e.g. "NVIDIA-H100-80GB-HBM3" or "TPU-v5-lite"; versions for the log
device=$("$PY" - <<'EOF'
import importlib.metadata as md, sys
import jax
d = jax.devices()[0]
names = ["jax", "jaxlib", "flax", "torch", "transformers", "tokenizers"]
print("== " + ", ".join(f"{n} {md.version(n)}" for n in names)
      + f"; JAX backend {jax.default_backend()}, {jax.device_count()} x {d.device_kind}",
      file=sys.stderr)
print(d.device_kind if d.platform != "cpu" else "cpu")
EOF
)
device=$(echo "$device" | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/--*/-/g; s/-$//')
if [ "$accel" != cpu ] && [ "$device" = cpu ]; then
  echo "== JAX found no $accel: check the jax plugin (jax-cuda*-plugin / libtpu) and the" \
       "driver. Stopping before the benchmark." >&2
  exit 3
fi

# Three runs, each writing its reports before the next starts (a time limit loses only the last):
# 1. every strategy, timed in this process (no fresh-process probes: on a GPU each costs ~15 s
#    to start plus its compile, which put the whole run past 8 minutes); 3 passes each, now that
#    a pass over the accelerator-sized corpus lasts seconds (10 were taken of 25 ms passes);
# 2. the cold and warm start probes of flaxsent's default plan, fp32 and bf16;
# 3. the training-step benchmark.
out="${RESULTS_ROOT}/${device}-$(date -u +%Y%m%dT%H%MZ)"
echo "== writing $out/{inference,cold-start,train}" >&2
status=0
"$PY" -m flaxsent.bench --no-probes --repeats 3 --out "$out/inference" "$@" || status=$?
"$PY" -m flaxsent.bench --only flax-bucketed --repeats 3 --out "$out/cold-start" "$@" \
  || status=$?
"$PY" -m flaxsent.bench --train --out "$out/train" "$@" || status=$?
exit $status
