"""Triton kernels of tritonobs, imported as ``tritonobs.kernels``.

Each module ``<op>.py`` holds ``@triton.jit _<op>_kernel`` and its launcher ``<op>_triton``, called
by the ``tritonobs::<op>`` op on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1`` with
``TRITONOBS_BACKEND=triton``). Nothing here is imported by ``import tritonobs``.

One source for launches and compile checks: each launcher gets its kernel, constexprs and compile
options from one function returning a ``LaunchConfig`` (``kernels/_launch.py``; options from
``_launch.options``, which pins ``enable_fp_fusion=False``), and every module that defines a
``@triton.jit`` function exports ``COMPILE_SPECS`` made from the same functions with
``LaunchConfig.spec(signature)``, one per variant the launcher launches (each input dtype, each
code-changing constexpr), e.g.::

    def launch_config(bins: int) -> LaunchConfig:
        return LaunchConfig(_op_kernel, {"NBINS": bins, "BLOCK": 4096}, options(8))

    COMPILE_SPECS = [
        launch_config(2048).spec({"x_ptr": f"*{dt}", "n": "i64"}) for dt in ("fp32", "fp16", "bf16")
    ]

``tests/test_compile_sm90.py`` runs ``tests/compile_sm90.py``, which compiles each spec for sm_90
and checks registers, spills, pinned options and PTX facts; ``tests/test_launch_specs.py`` checks
that every launch the observers and ops make is one of the specs. See ``docs/kernels.md``.
"""
