import os

import numpy as np
import pytest

from fiberflow.shared import real_psf_path, shared_data_dir

# keep numba's on-disk cache inside the project, whatever the test runner's cwd
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".fiberflow-cache", "numba"))


@pytest.fixture
def rng():
    return np.random.default_rng(20251205)


@pytest.fixture(scope="session")
def shared_data():
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data (real DESI instrument data) is absent on this machine")
    return path


@pytest.fixture(scope="session")
def real_psf_file():
    path = real_psf_path()
    if path is None:
        pytest.skip("the real DESI PSF ../shared/data/psf/psf-r0-00067784.fits is absent on this machine")
    return path


@pytest.fixture(scope="session")
def real_psf(real_psf_file):
    from fiberflow.io.psf import read_psf

    return read_psf(real_psf_file)
