"""Compile every Triton kernel of ``tritonobs.kernels`` for sm_90 (H100/H200) on a machine without a GPU.

The interpreter runs kernels on CPU tensors but never sees the real compiler. This script does: it
builds PTX and a cubin of each kernel variant for ``GPUTarget("cuda", 90, 32)`` with the ptxas that
Triton's wheel bundles (no CUDA toolkit, no driver) and prints its registers, spills, shared memory,
the blocks that fit on one SM, and what its PTX holds (``cp.async``, ``div.*.f32``, the widest
global load), so type errors, unsupported ops and register pressure show up in CI.

Convention: every ``kernels/<op>.py`` that defines a ``@triton.jit`` function exports::

    COMPILE_SPECS: list[tuple[JITFunction, dict[str, str], dict[str, object]]]
    # or, where the launcher passes compile options, a 4th item:
    #     (jit_fn, signature, constexprs, {"num_warps": 8, "enable_fp_fusion": False})

one entry per variant the launcher can launch (each input dtype, each constexpr value that changes
the code), with the launcher's own values so that the register counts are the real ones:

* ``signature``: every argument of the kernel by name -> Triton type (``"*fp32"``, ``"*bf16"``,
  ``"*i64"``, ``"i64"``, ``"i32"``, ``"fp32"``), and ``"constexpr"`` for the constexpr arguments;
  ``"i32:16"`` / ``"i64:16"`` marks an integer the launch passes as a multiple of 16 (the runtime
  specialises those, which lets loads vectorise: strides, sizes), as in ``triton.tools.compile``;
* ``constexprs``: the value of each constexpr argument;
* options: what the launcher passes besides the grid (``num_warps``, ``num_stages``,
  ``enable_fp_fusion``); a spec that does not pin ``enable_fp_fusion`` fails.

Launchers make their specs with ``LaunchConfig.spec`` (``kernels/_launch.py``) from the function
that makes their launches, so the options and constexprs compiled here are the launched ones.

Pointers are compiled as 16-byte aligned (as the runtime specialises torch's allocations). Every
``@triton.jit`` function whose name ends in ``_kernel`` must appear in at least one spec; helpers
called from kernels need none. A module with a ``@triton.jit`` function and no ``COMPILE_SPECS`` fails.

Run it in a process without the interpreter (``tests/test_compile_sm90.py`` does)::

    TRITON_INTERPRET=0 python tests/compile_sm90.py [--json OUT] [module ...]

Prints one line per spec (``--json`` also writes them as records); exits 1 if a module breaks the
convention or a spec fails to compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
import traceback
from types import ModuleType

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

import tritonobs.kernels

TARGET = GPUTarget("cuda", 90, 32)

# Per-SM limits of sm_90 (H100/H200): registers, shared memory (bytes; the runtime reserves 1 KiB
# per block), threads and blocks, and the granularity of register allocation (per warp).
SM_REGISTERS = 65536
SM_SHARED = 228 * 1024
BLOCK_RESERVED_SHARED = 1024
SM_THREADS = 2048
SM_BLOCKS = 32
REGISTER_UNIT = 256


@dataclasses.dataclass
class Record:
    """One compiled spec: what ptxas and the PTX say about it."""

    module: str
    kernel: str
    label: str
    options: dict[str, object]
    num_warps: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int
    blocks_per_sm: int
    cp_async: int
    div_f32: int
    max_load_bits: int
    fma_f32: int
    pointer_dtypes: dict[str, str]


def blocks_per_sm(registers: int, num_warps: int, shared: int) -> int:
    """Blocks of ``num_warps`` warps that fit on one sm_90 SM at once (the occupancy rules)."""
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = SM_REGISTERS // (per_warp * num_warps)
    by_shared = SM_SHARED // (shared + BLOCK_RESERVED_SHARED)
    return min(by_registers, by_shared, SM_THREADS // (32 * num_warps), SM_BLOCKS)


def ptx_facts(ptx: str) -> dict[str, int]:
    """Counts in the PTX text: ``cp.async`` instructions, ``div.*.f32``, ``fma.rn.f32``, and the
    widest global load in bits (vector width x element bits; 0 when there is none)."""
    loads = re.findall(r"\bld\.global(?:\.[a-z0-9_]+)*?(?:\.v(\d))?\.[bfsu](\d+)\b", ptx)
    return {
        "cp_async": len(re.findall(r"\bcp\.async\.(?:ca|cg)\b", ptx)),
        "div_f32": len(re.findall(r"\bdiv(?:\.[a-z]+)*\.f32\b", ptx)),
        "max_load_bits": max((int(v or 1) * int(bits) for v, bits in loads), default=0),
        "fma_f32": len(re.findall(r"\bfma\.rn\.f32\b", ptx)),
    }


def jit_functions(module: ModuleType) -> dict[str, JITFunction]:
    """The ``@triton.jit`` functions defined in ``module`` (not those it imports)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, JITFunction) and obj.fn.__module__ == module.__name__
    }


def variant(signature: dict[str, str], constexprs: dict[str, object], options: dict) -> str:
    """A short label of a spec: its pointer dtypes, constexprs and options."""
    dtypes = sorted({t[1:] for t in signature.values() if t.startswith("*")})
    parts = ["/".join(dtypes)] + [f"{k}={v}" for k, v in {**constexprs, **options}.items()]
    return " ".join(parts)


def registers_and_spills(kernel: triton.compiler.CompiledKernel) -> tuple[int, int, int]:
    """``(registers, spill store bytes, spill load bytes)`` from ``ptxas -v`` on the kernel's PTX.

    ``CompiledKernel.n_regs`` needs a driver; the ptxas Triton uses, with the flags it passes,
    reports the same numbers without one.
    """
    ptxas = get_ptxas(TARGET.arch).path
    fmad = [] if kernel.metadata.enable_fp_fusion else ["--fmad=false"]
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        log = subprocess.run(
            [
                ptxas,
                "-v",
                "-lineinfo",
                "--regAllocOptLevel=2",
                *fmad,
                f"--gpu-name={sm_arch_from_capability(TARGET.arch)}",
                ptx,
            ]
            + ["-o", os.path.join(tmp, "k.cubin")],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (
        int(regs.group(1)) if regs else -1,
        int(spills.group(1)) if spills else -1,
        int(spills.group(2)) if spills else -1,
    )


def check_module(name: str, records: list[Record]) -> int:
    """Compile ``tritonobs.kernels.<name>``'s specs, appending a record per spec to ``records``;
    returns the number of failures."""
    try:
        module = importlib.import_module(f"tritonobs.kernels.{name}")
    except Exception:
        print(f"FAIL {name}: import failed\n{traceback.format_exc()}")
        return 1
    functions = jit_functions(module)
    if not functions:
        return 0
    specs = getattr(module, "COMPILE_SPECS", None)
    if not specs:
        print(f"FAIL {name}: defines @triton.jit {sorted(functions)} but no COMPILE_SPECS")
        return 1
    failures = 0
    covered = {spec[0].fn.__name__ for spec in specs}
    for missing in sorted(n for n in functions if n.endswith("_kernel") and n not in covered):
        print(f"FAIL {name}.{missing}: kernel has no entry in COMPILE_SPECS")
        failures += 1
    for fn, signature, constexprs, *rest in specs:
        options = rest[0] if rest else {}
        label = f"{name}.{fn.fn.__name__} [{variant(signature, constexprs, options)}]"
        if "enable_fp_fusion" not in options:
            print(f"FAIL {label}: enable_fp_fusion is not pinned")
            failures += 1
        attrs = {
            (fn.arg_names.index(arg),): [["tt.divisibility", 16]]
            for arg, ty in signature.items()
            if ty.startswith("*") or ty.endswith(":16")
        }
        signature = {arg: ty.removesuffix(":16") for arg, ty in signature.items()}
        start = time.perf_counter()
        try:
            kernel = triton.compile(
                ASTSource(fn, signature, constexprs, attrs), target=TARGET, options=options
            )
            regs, spill_stores, spill_loads = registers_and_spills(kernel)
        except Exception:
            print(f"FAIL {label}\n{traceback.format_exc()}")
            failures += 1
            continue
        seconds = time.perf_counter() - start
        num_warps = kernel.metadata.num_warps
        shared = kernel.metadata.shared
        record = Record(
            module=name,
            kernel=fn.fn.__name__,
            label=label,
            options=dict(options),
            num_warps=num_warps,
            registers=regs,
            spill_stores=spill_stores,
            spill_loads=spill_loads,
            shared=shared,
            blocks_per_sm=blocks_per_sm(regs, num_warps, shared),
            **ptx_facts(kernel.asm["ptx"]),
            pointer_dtypes={a: t[1:] for a, t in signature.items() if t.startswith("*")},
        )
        records.append(record)
        spills = f"spills {spill_stores}B st/{spill_loads}B ld"
        warn = "  <-- SPILLS" if spill_stores > 0 or spill_loads > 0 else ""
        print(
            f"ok   {label}: {regs} registers, {spills}, {shared} B shared, "
            f"{record.blocks_per_sm} blocks/SM, cp.async {record.cp_async}, "
            f"div.f32 {record.div_f32}, {record.max_load_bits}-bit loads, "
            f"{seconds:.2f} s{warn}"
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="kernel modules to check (default: all)")
    parser.add_argument("--json", help="also write one record per spec to this file")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("needs the real compiler: run it with TRITON_INTERPRET unset or 0")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    names = args.modules or sorted(m.name for m in pkgutil.iter_modules(tritonobs.kernels.__path__))
    records: list[Record] = []
    failures = sum(check_module(name, records) for name in names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in records], f, indent=1)
    print(f"{len(names)} modules, {len(records)} specs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
