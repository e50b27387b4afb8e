"""TPU topology names, the chips table and the roofline; the errors without libtpu (no TPU and no
libtpu needed: the compiles themselves are in test_aot.py)."""

import pytest

from flaxsent.aot import tpu
from flaxsent.aot.tpu import CHIPS, Roofline, Topology, parse_topology, roofline
from flaxsent.cli import main
from flaxsent.errors import TpuError


@pytest.mark.parametrize("name,chip,chips", [("v5e:2x2", "v5e", 4), ("v6e:2x4", "v6e", 8),
                                             ("v4:2x2x1", "v4", 4), ("V5P:2x2x2", "v5p", 8)])
def test_parse_topology(name, chip, chips):
    assert parse_topology(name) == (CHIPS[chip], chips)


@pytest.mark.parametrize("name", ["v3:2x2", "v5e", "v5e:2", "v5e:2x", "tpu", "", None])
def test_unknown_topology_names_the_known_ones(name):
    with pytest.raises(TpuError, match="v5e:2x2"):
        parse_topology(name)


def test_empty_dimension_is_an_error():
    with pytest.raises(TpuError, match="at least 1"):
        parse_topology("v5e:0x2")


def test_chip_table_is_per_chip_and_plausible():
    # bf16 peak grows by generation past v5e; v5e has the least HBM
    assert CHIPS["v5e"].bf16_flops < CHIPS["v4"].bf16_flops < CHIPS["v5p"].bf16_flops \
        < CHIPS["v6e"].bf16_flops
    assert min(CHIPS.values(), key=lambda c: c.hbm_bytes).name == "v5e"
    assert all(c.source.startswith("cloud.google.com/tpu/docs/") for c in CHIPS.values())


class _Device:
    device_kind = "TPU v4"


def _topology(chip: str, chips: int, devices: int) -> Topology:
    return Topology(f"{chip}:x", CHIPS[chip], chips, tuple(_Device() for _ in range(devices)))


def test_two_devices_per_chip_share_its_figures():
    topo = _topology("v4", 4, 8)
    assert topo.devices_per_chip == 2
    assert topo.device_flops == CHIPS["v4"].bf16_flops / 2
    assert topo.device_hbm_bytes == CHIPS["v4"].hbm_bytes / 2
    assert topo.describe()["devices"] == 8


def test_roofline_takes_the_binding_limit():
    topo = _topology("v5e", 4, 4)
    chip = CHIPS["v5e"]
    compute = roofline(topo, flops=chip.bf16_flops, bytes_accessed=0)  # 1 s of peak
    assert compute == Roofline(1.0, 0.0) and compute.bound == "compute"
    memory = roofline(topo, flops=chip.bf16_flops, bytes_accessed=3 * chip.hbm_bandwidth)
    assert memory.seconds == pytest.approx(3.0) and memory.bound == "memory"


def test_float32_matmuls_cost_their_bf16_passes():
    topo = _topology("v6e", 4, 4)
    flops = CHIPS["v6e"].bf16_flops
    assert roofline(topo, flops, 0, dtype="float32", precision="highest").seconds == 6.0
    assert roofline(topo, flops, 0, dtype="float32", precision="default").seconds == 1.0
    assert roofline(topo, flops, 0, dtype="bfloat16", precision="highest").seconds == 1.0


def test_cli_unknown_topology_is_one_line(capsys):
    assert main(["aot", "--topology", "v9:2x2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flaxsent aot: error: topology 'v9:2x2'" in err[0], err


def test_cli_without_libtpu_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setattr(tpu, "libtpu_installed", lambda: False)
    assert main(["aot", "--topology", "v5e:2x2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs libtpu" in err[0] and "flaxsent[tpu-aot]" in err[0], err
