"""MPI detection for steps that spread work over ranks (mpi4py, optional extra ``fiberflow[mpi]``).

A step uses MPI only when a launcher started it (``mpirun``/``mpiexec``/``srun --mpi=...`` set
one of :data:`LAUNCHER_ENV`), so a plain ``fiberflow extract`` never imports mpi4py.
"""

from __future__ import annotations

import os

from .errors import ConfigError

#: rank variables set by MPICH/Hydra (PMI_RANK), PMIx launchers incl. ``srun --mpi=pmix``
#: (PMIX_RANK) and Open MPI (OMPI_COMM_WORLD_RANK)
LAUNCHER_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")


def launched_under_mpi(environ=None):
    """True when an MPI launcher started this process."""
    env = os.environ if environ is None else environ
    return any(k in env for k in LAUNCHER_ENV)


def mpi_comm():
    """``MPI.COMM_WORLD`` when launched under MPI with more than one rank, else None.

    Raises
    ------
    ConfigError
        Launched under MPI but mpi4py (or its MPI library) cannot be imported.
    """
    if not launched_under_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"started by an MPI launcher but mpi4py is not usable ({exc}); "
                          "install the extra: pip install 'fiberflow[mpi]'") from exc
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None
