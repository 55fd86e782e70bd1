"""Triton kernels of tritonobs, imported as ``tritonobs.kernels``.

Each module ``<op>.py`` holds ``@triton.jit _<op>_kernel`` and its launcher ``<op>_triton``, called
by the ``tritonobs::<op>`` op on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1`` with
``TRITONOBS_BACKEND=triton``). Nothing here is imported by ``import tritonobs``.
"""
