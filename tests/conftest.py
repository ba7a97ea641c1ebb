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


#: the long modules first, so that `pytest -n 2 --dist loadfile` (make test) starts them at once
#: and the short ones fill the gaps; the Slurm test mostly waits for the executor's polling
LONG_MODULES = ("test_slurm.py", "test_qa_workflow.py", "test_cli.py", "test_operations.py",
                "test_healpix_workflow.py", "test_preproc_workflow.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(LONG_MODULES)))
