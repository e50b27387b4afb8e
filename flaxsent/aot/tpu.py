"""TPU slices without a TPU: their chips' published figures, and their devices from libtpu.

libtpu (the PyPI package `jax[tpu]` pins) describes a named slice's devices on any machine, so
jax can compile for it ahead of time (`flaxsent.aot.compile`). What a compiled program would
take there is estimated from the chips' published peak and HBM bandwidth (a roofline): an
estimate, never a measurement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import jax

from flaxsent.errors import TpuError

# The libtpu that jax[tpu] pins for the jax this project is built on (jax 0.10.2's metadata:
# `libtpu==0.0.42.*; extra == "tpu"`); the `tpu-aot` extra installs it.
LIBTPU_REQUIREMENT = "libtpu==0.0.42.*"
INSTALL_HINT = f"pip install 'flaxsent[tpu-aot]' (or pip install '{LIBTPU_REQUIREMENT}')"
# Passes of bf16 matmuls a float32 matmul takes on TPU at each jax precision (lax.Precision's
# docstring: DEFAULT computes in bf16, HIGH in 3 bf16 passes, HIGHEST in 6).
FLOAT32_PASSES = {"default": 1, "high": 3, "highest": 6}


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation's published per-chip figures."""

    name: str
    bf16_flops: float  # peak dense bf16 FLOP/s
    int8_ops: float  # peak dense int8 OP/s (the MXU's int8 x int8 -> int32 rate)
    hbm_bytes: float  # HBM capacity
    hbm_bandwidth: float  # bytes/s
    source: str


# Per chip, as Google Cloud's TPU pages state them (GB = 1e9 bytes, GiB = 2**30).
CHIPS: dict[str, Chip] = {chip.name: chip for chip in (
    # cloud.google.com/tpu/docs/v4: 275 TFLOPs (bf16 or int8), HBM2 32 GiB at 1200 GBps
    Chip("v4", 275e12, 275e12, 32 * 2**30, 1200e9, "cloud.google.com/tpu/docs/v4"),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOPs (bf16), 394 TOPs (int8; 100 PetaOps int8 per
    # 256-chip pod), HBM2 16 GB at 819 GBps
    Chip("v5e", 197e12, 394e12, 16e9, 819e9, "cloud.google.com/tpu/docs/v5e"),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOPs (bf16), 918 TOPs (int8), HBM2e 95 GB at 2765 GBps
    Chip("v5p", 459e12, 918e12, 95e9, 2765e9, "cloud.google.com/tpu/docs/v5p"),
    # cloud.google.com/tpu/docs/v6e (Trillium): 918 TFLOPs (bf16), 1836 TOPs (int8), HBM 32 GB
    # at 1638 GBps
    Chip("v6e", 918e12, 1836e12, 32e9, 1638e9, "cloud.google.com/tpu/docs/v6e"),
)}
EXAMPLES = "v5e:2x2, v6e:2x2, v4:2x2x1, v5p:2x2x1"
_NAME = re.compile(r"^(?P<chip>[a-z0-9]+):(?P<dims>[0-9]+(?:x[0-9]+)+)$")


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named TPU slice: its chip, its chip count and the compile-only devices libtpu made."""

    name: str
    chip: Chip
    chips: int
    devices: tuple[jax.Device, ...]

    @property
    def devices_per_chip(self) -> int:
        """Devices jax sees on one chip: 1 on v5e/v6e and megacore v5p, 2 on v4's topology."""
        return max(1, len(self.devices) // self.chips)

    @property
    def device_kind(self) -> str:
        """What jax calls the devices, e.g. 'TPU v5 lite'."""
        return self.devices[0].device_kind

    @property
    def device_flops(self) -> float:
        """Peak bf16 FLOP/s of one device (a chip's share)."""
        return self.chip.bf16_flops / self.devices_per_chip

    @property
    def device_int8_ops(self) -> float:
        """Peak int8 OP/s of one device (a chip's share)."""
        return self.chip.int8_ops / self.devices_per_chip

    @property
    def device_hbm_bytes(self) -> float:
        """HBM of one device (a chip's share)."""
        return self.chip.hbm_bytes / self.devices_per_chip

    @property
    def device_hbm_bandwidth(self) -> float:
        """HBM bytes/s of one device (a chip's share)."""
        return self.chip.hbm_bandwidth / self.devices_per_chip

    def describe(self) -> dict[str, Any]:
        """The slice and the figures every estimate uses, for a report."""
        return {"name": self.name, "chip": self.chip.name, "device_kind": self.device_kind,
                "chips": self.chips, "devices": len(self.devices),
                "devices_per_chip": self.devices_per_chip,
                "chip_bf16_tflops": self.chip.bf16_flops / 1e12,
                "chip_int8_tops": self.chip.int8_ops / 1e12,
                "chip_hbm_gb": self.chip.hbm_bytes / 1e9,
                "chip_hbm_bandwidth_gbps": self.chip.hbm_bandwidth / 1e9,
                "source": self.chip.source}


def libtpu_installed() -> bool:
    """Whether jax can load libtpu: TPU_LIBRARY_PATH names a file, or the package is installed."""
    path = os.environ.get("TPU_LIBRARY_PATH")
    return bool(path and os.path.isfile(path)) or importlib.util.find_spec("libtpu") is not None


def parse_topology(name: str) -> tuple[Chip, int]:
    """The chip and chip count of a topology name such as 'v5e:2x2'; an error names the known."""
    match = _NAME.match(name.strip().lower()) if isinstance(name, str) else None
    if not match or match["chip"] not in CHIPS:
        raise TpuError(f"topology {name!r}: flaxsent knows {', '.join(CHIPS)} slices, named "
                       f"chip:AxB[xC], e.g. {EXAMPLES}")
    dims = [int(d) for d in match["dims"].split("x")]
    if 0 in dims:
        raise TpuError(f"topology {name!r}: every dimension must be at least 1")
    return CHIPS[match["chip"]], math.prod(dims)


def get_topology(name: str) -> Topology:
    """The compile-only devices of a TPU slice, from libtpu (no TPU needed)."""
    chip, chips = parse_topology(name)
    if not libtpu_installed():
        raise TpuError(f"compiling for {name} needs libtpu, which is not installed: "
                       f"{INSTALL_HINT}")
    from jax.experimental import topologies
    canonical = name.strip().lower()
    try:
        with _quiet_stderr():
            devices = topologies.get_topology_desc(topology_name=canonical,
                                                   platform="tpu").devices
    except Exception as e:  # libtpu reports a bad shape as a runtime error
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TpuError(f"topology {name!r}: libtpu says: {message}") from None
    return Topology(canonical, chip, chips, tuple(devices))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what libtpu writes to fd 2 while it starts: off a TPU VM it logs, as errors,
    that it cannot find the VM's metadata, which compiling for a named topology never needs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@dataclasses.dataclass(frozen=True)
class Roofline:
    """A program's time on one device if it ran at the chip's peak or its HBM bandwidth,
    whichever binds: a lower bound on the real time, so an optimistic ESTIMATE."""

    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        """The estimated time: the binding limit's."""
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        """Which limit binds: 'compute' or 'memory'."""
        return "compute" if self.compute_s >= self.memory_s else "memory"


def roofline(topology: Topology, flops: float, bytes_accessed: float, *,
             dtype: str = "bfloat16", precision: str = "default",
             int8_flops: float = 0.0) -> Roofline:
    """The roofline of one device's program (XLA's per-device FLOPs and bytes accessed).

    float32 matmuls run as several bf16 passes (FLOAT32_PASSES), so their peak is divided by
    that many; bf16 runs at the published peak. `int8_flops` of the FLOPs (int8 x int8 -> int32
    matmuls) run at the chip's int8 peak instead.
    """
    passes = FLOAT32_PASSES[precision] if dtype == "float32" else 1
    return Roofline(compute_s=(flops - int8_flops) * passes / topology.device_flops
                    + int8_flops / topology.device_int8_ops,
                    memory_s=bytes_accessed / topology.device_hbm_bandwidth)
