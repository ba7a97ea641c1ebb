import os

import numpy as np
import pytest

from fiberflow.shared import real_psf_path, shared_data_dir

# keep numba's on-disk cache inside the project, whatever the test runner's cwd
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".fiberflow-cache", "numba"))


@pytest.fixture
def rng():
    return np.random.default_rng(20251205)


def _require(path, what):
    if path is None:
        pytest.skip(f"{what} is absent on this machine (real DESI instrument data from ../shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    return _require(shared_data_dir(), "../shared/data")


@pytest.fixture(scope="session")
def real_psf_file():
    return _require(real_psf_path(), "../shared/data/psf/psf-r0-00067784.fits")


@pytest.fixture(scope="session")
def real_psf(real_psf_file):
    from fiberflow.io.psf import read_psf

    return read_psf(real_psf_file)


#: mark for tests (or modules) that need ../shared/data
needs_shared_data = pytest.mark.skipif(
    shared_data_dir() is None, reason="../shared/data (real DESI instrument data) is absent on this machine")
