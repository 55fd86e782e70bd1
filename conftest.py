"""Root conftest: Triton's interpreter must be on before anything imports triton.

Tests run every Triton kernel on CPU tensors through ``TRITON_INTERPRET=1``; tests that need the
real compiler (sm_90 compile checks, CUDA) start a separate process with it off.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
