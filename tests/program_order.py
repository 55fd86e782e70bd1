"""Run Triton's interpreter with its programs in a shuffled order.

The interpreter runs the programs of a launch one after another, in order 0, 1, 2, ...; a GPU runs
them in any order and at once. A kernel whose programs hand work to each other (the last ticket
reduces the partials, atomics add into shared counters) must give bit-identical results whatever
the order: :func:`shuffled_programs` makes the interpreter run each launch's programs in a seeded
random permutation, so a test can compare with the in-order run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

from triton.runtime import interpreter


@contextlib.contextmanager
def shuffled_programs(seed: int) -> Iterator[list[int]]:
    """Within the block, every interpreted launch runs its programs in a random order.

    Yields the list of the grid sizes of the launches made (to check that some had several
    programs).
    """
    builder = interpreter.interpreter_builder
    original = type(builder).set_grid_idx
    rng = random.Random(seed)
    grids: list[int] = []
    order: list[int] = []

    def set_grid_idx(self, x: int, y: int, z: int) -> None:
        nx, ny, nz = self.grid_dim
        step = (x * ny + y) * nz + z
        if step == 0:
            order[:] = range(nx * ny * nz)
            rng.shuffle(order)
            grids.append(nx * ny * nz)
        program = order[step]
        original(self, program // (ny * nz), (program // nz) % ny, program % nz)

    type(builder).set_grid_idx = set_grid_idx
    try:
        yield grids
    finally:
        type(builder).set_grid_idx = original
