"""The ``tritonobs::*`` custom ops. Importing this package registers them all."""

from tritonobs.ops import aminmax, aminmax_per_channel  # noqa: F401
