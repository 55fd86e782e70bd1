"""Every kernel of ``tritonobs.kernels`` compiles for sm_90 (see ``tests/compile_sm90.py``), and the
compiled code of every ``COMPILE_SPECS`` variant has the properties the kernels rely on on a GPU.

The interpreter is on in this process, and compiled and interpreted kernels do not mix in one
process, so the compile runs once in a separate one with ``TRITON_INTERPRET`` off, and writes one
record per spec (registers and spills from the ptxas bundled in Triton's wheel, shared memory,
blocks per SM, counts read from the PTX) that the tests below check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compile_sm90.py")

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("sm90") / "specs.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def _of(records: list[dict], kernel: str) -> list[dict]:
    chosen = [r for r in records if r["kernel"] == kernel]
    assert chosen, kernel
    return chosen


def test_every_kernel_compiles_for_sm90(records):
    assert {r["module"] for r in records} >= {"aminmax", "histc", "histogram_update"}


def test_no_variant_spills(records):
    spilling = [r["label"] for r in records if r["spill_stores"] or r["spill_loads"]]
    assert not spilling


def test_eight_warp_variants_use_at_most_128_registers(records):
    """128 registers x 256 threads: two blocks of 8 warps fit on an SM."""
    heavy = [(r["label"], r["registers"]) for r in records if r["num_warps"] == 8]
    assert heavy
    assert [(label, regs) for label, regs in heavy if regs > 128] == []


def test_every_variant_pins_fp_fusion_off(records):
    assert [r["label"] for r in records if r["options"].get("enable_fp_fusion") is not False] == []


def test_blocks_per_sm_are_recorded(records):
    """Blocks that fit per SM from registers x threads and shared memory (sm_90 limits)."""
    for r in records:
        print(f"{r['blocks_per_sm']:3d} blocks/SM  {r['registers']:3d} regs  {r['label']}")
        assert 1 <= r["blocks_per_sm"] <= min(32, 2048 // (32 * r["num_warps"])), r["label"]
    streaming = _of(records, "_aminmax_kernel") + _of(records, "_histogram_stats_kernel")
    assert min(r["blocks_per_sm"] for r in streaming) >= 2


def test_blocks_per_sm_follow_the_sm90_limits():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import compile_sm90
    finally:
        sys.path.remove(str(SCRIPT.parent))
    # 128 regs x 256 threads = half the register file; 255 regs round up to 256 per thread.
    assert compile_sm90.blocks_per_sm(128, 8, 0) == 2
    assert compile_sm90.blocks_per_sm(129, 8, 0) == 1
    assert compile_sm90.blocks_per_sm(255, 4, 0) == 2
    # few registers: the 2048 threads, or the 32 blocks, or shared memory limit.
    assert compile_sm90.blocks_per_sm(16, 8, 0) == 8
    assert compile_sm90.blocks_per_sm(16, 1, 0) == 32
    assert compile_sm90.blocks_per_sm(16, 4, 100 * 1024) == 2


def test_aminmax_loads_are_128_bit_on_contiguous_rows(records):
    """128-bit vector loads (``ld.global.v4.b32``, ``.v2.b64`` for fp64) where the innermost axis
    is contiguous (``stride 1``, either per-channel layout), and no division."""
    for r in _of(records, "_aminmax_kernel"):
        if "stride_xk=1" in r["label"] or "stride_xc=1" in r["label"]:
            assert r["max_load_bits"] == 128, r["label"]
        assert r["div_f32"] == 0, r["label"]


def test_aminmax_full_tiles_are_pipelined(records):
    """The full-tile loop has no branch and no mask, so Triton pipelines its loads: ``cp.async``
    into shared memory, ``NUM_STAGES - 1`` tiles ahead, in every variant."""
    for r in _of(records, "_aminmax_kernel"):
        assert r["cp_async"] > 0, r["label"]
        assert r["shared"] > 0, r["label"]


def test_aminmax_grid_fills_the_blocks_that_fit(records):
    """``PROGRAMS_PER_SM`` (the grid's programs per SM) is the fewest blocks per SM over the
    compiled variants: every program of a one-wave grid runs at once, whatever the variant."""
    from tritonobs.kernels import aminmax

    fitting = [r["blocks_per_sm"] for r in _of(records, "_aminmax_kernel")]
    assert min(fitting) == aminmax.PROGRAMS_PER_SM, fitting


def test_binning_kernels_divide_once_and_load_128_bit_vectors(records):
    """The binning kernels divide once per program (the reciprocal of the range; a value's bin is a
    multiply and one exact comparison) and load 128-bit vectors: full tiles load unmasked, the
    ragged last tile alone is masked."""
    for kernel in ("_histogram_stats_kernel", "_histc_kernel"):
        for r in _of(records, kernel):
            counts = "COUNT=False" not in r["label"]
            assert r["div_f32"] == (1 if counts else 0), r["label"]
            assert r["max_load_bits"] == 128, r["label"]
            assert r["cp_async"] == 0, r["label"]
