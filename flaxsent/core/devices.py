"""Whether this host has an accelerator, and pinning JAX to the CPU where it has none.

libtpu (which the `test` and `tpu-aot` extras install, for `flaxsent aot`) makes every JAX process
on a host without a TPU print half a dozen lines of initialisation errors before it falls back to
the CPU. On a host with no accelerator at all, JAX would run on the CPU anyway, so flaxsent's
command lines say so up front (`JAX_PLATFORMS=cpu`) and stay quiet. A host with a TPU or GPU, a
JAX accelerator plugin, or a `JAX_PLATFORMS` already set is left alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path

# PCI vendors of accelerators JAX drives: Google (TPU), NVIDIA, AMD/ATI (GPU)
_ACCELERATOR_VENDORS = {"0x1ae0", "0x10de", "0x1002"}
_DEVICE_FILES = ("dev/accel*", "dev/vfio/[0-9]*", "dev/nvidia[0-9]*", "dev/kfd")


def accelerator_present(root: Path = Path("/")) -> bool:
    """True if the host under `root` shows a TPU or GPU (device files or PCI vendors) or JAX has
    an accelerator plugin installed; when unsure, True."""
    if any(any(root.glob(pattern)) for pattern in _DEVICE_FILES):
        return True
    for vendor in root.glob("sys/bus/pci/devices/*/vendor"):
        try:
            if vendor.read_text().strip() in _ACCELERATOR_VENDORS:
                return True
        except OSError:
            return True
    return bool(metadata.entry_points(group="jax_plugins")) or \
        importlib.util.find_spec("jax_plugins") is not None


def pin_cpu_where_no_accelerator(root: Path = Path("/")) -> bool:
    """Set JAX_PLATFORMS=cpu (this process and its children) when libtpu is installed on a host
    with no accelerator and the user chose no platform; returns whether it did."""
    if "JAX_PLATFORMS" in os.environ or importlib.util.find_spec("libtpu") is None:
        return False
    if accelerator_present(root):
        return False
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # imported already: its config read the variable at import
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    return True
