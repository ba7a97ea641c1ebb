import os

import numpy as np
import pytest

from fiberflow.reference import real_psf_path

# keep numba's on-disk cache inside the project, whatever the test runner's cwd
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".fiberflow-cache", "numba"))


@pytest.fixture
def rng():
    return np.random.default_rng(20251205)


@pytest.fixture(scope="session")
def real_psf_file():
    return real_psf_path()


@pytest.fixture(scope="session")
def real_psf(real_psf_file):
    from fiberflow.io.psf import read_psf

    return read_psf(real_psf_file)


#: the long modules first, so that `pytest -n 2 --dist loadfile` (make test) starts them at once
#: and the short ones fill the gaps; the Slurm test mostly waits for the executor's polling
LONG_MODULES = ("test_slurm.py", "test_qa_workflow.py", "test_cli.py", "test_operations.py",
                "test_healpix_workflow.py", "test_preproc_workflow.py", "test_fresh_install.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(LONG_MODULES)))


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a real PostgreSQL server the tests started (tests/_postgres.py), stopped at the end."""
    import _postgres

    why = _postgres.available()
    if why:
        pytest.skip(why)
    with _postgres.server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def qc_database(request, tmp_path):
    """A fresh QC1 database: a SQLite file, then a database on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "qc1.sqlite")
    import _postgres

    url = request.getfixturevalue("postgres_server")
    return _postgres.new_database(url, "qc_" + request.node.name.split("[")[0][-40:].lower())
