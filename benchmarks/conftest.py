"""Benchmark parametrization: the profile (``--bench-profile``) picks sizes, dtypes, data, providers.

``pytest benchmarks/`` runs the ``cuda`` profile where a GPU is present and ``cpu`` otherwise;
``--bench-profile tiny --benchmark-disable`` is the CI smoke run (every benchmark once).
"""

from __future__ import annotations

import logging
import os
import time

import pytest
import torch

from tritonobs.bench import Profile, bench_device, default_profile_name, dtype_name, get_profile
from tritonobs.bench import shape_name as _shape_name


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-profile",
        default=None,
        help="benchmark profile: cuda, cpu, cpu2, tiny, gpu_check, gpu_check_dry "
        "(default: TRITONOBS_BENCH_PROFILE, else cuda with a GPU, else cpu)",
    )


def _profile(config: pytest.Config) -> Profile:
    return get_profile(config.getoption("--bench-profile") or default_profile_name())


def pytest_configure(config: pytest.Config) -> None:
    # The torch.compile provider compiles references that graph-break on purpose (a host check of
    # the NaN/inf fast path); one warning per compile would drown the report.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    # Every shape, dtype and constant of a reference is its own compiled graph; past dynamo's
    # default limit (8) the torch.compile provider would silently run eagerly.
    torch._dynamo.config.recompile_limit = 256


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = _profile(metafunc.config)
    names = metafunc.fixturenames
    # Parametrized last varies fastest: the provider, so the torch.ao baseline of a case is timed
    # just before the others and shared by them.
    if "data" in names:
        metafunc.parametrize("data", profile.data_kinds)
    if "dtype" in names:
        metafunc.parametrize("dtype", profile.dtypes, ids=dtype_name)
    if "shape" in names:
        metafunc.parametrize("shape", profile.sizes, ids=_shape_name)
    if "provider" in names:
        supported = getattr(metafunc.function, "bench_providers", profile.providers)
        metafunc.parametrize("provider", [p for p in profile.providers if p in supported])


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> Profile:
    """The benchmark profile of this run (sets its CPU thread count)."""
    chosen = _profile(request.config)
    if chosen.cpu_threads is not None:
        torch.set_num_threads(chosen.cpu_threads)
    return chosen


@pytest.fixture(scope="session")
def device(profile: Profile) -> torch.device:
    """The device the profile measures."""
    return bench_device(profile)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # gpu_check.sh gives the benchmarks a deadline; past it, the rest are reported as not run.
    deadline = os.environ.get("TRITONOBS_BENCH_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip("not run: gpu_check.sh's time budget was spent")
