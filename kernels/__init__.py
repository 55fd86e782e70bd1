"""Triton kernels of tritonobs, imported as ``tritonobs.kernels``.

Each module ``<op>.py`` holds ``@triton.jit _<op>_kernel`` and its launcher ``<op>_triton``, called
by the ``tritonobs::<op>`` op on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1`` with
``TRITONOBS_BACKEND=triton``). Nothing here is imported by ``import tritonobs``.

sm_90 compile check: every module that defines a ``@triton.jit`` function exports ``COMPILE_SPECS``,
a list of ``(jit_fn, signature, constexprs)`` (optionally a 4th item, the compile options the
launcher passes: ``num_warps``, ``num_stages``, ``enable_fp_fusion``), one per variant the launcher
launches (each input dtype, each code-changing constexpr), e.g.::

    COMPILE_SPECS = [
        (_op_kernel, {"x_ptr": f"*{dt}", "n": "i64", "BLOCK": "constexpr"}, {"BLOCK": 4096},
         {"num_warps": 8})
        for dt in ("fp32", "fp16", "bf16")
    ]

``tests/test_compile_sm90.py`` runs ``tests/compile_sm90.py``, which compiles each spec with
``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))`` and
prints registers and spills; every ``*_kernel`` must be covered. Its docstring has the details.
"""
