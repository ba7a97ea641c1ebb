"""A real PostgreSQL server for the tests (Debian's postgresql package, which ``make test``
installs): a throw-away cluster (initdb, trust authentication, 127.0.0.1 on a free port, fsync
off) started with pg_ctl and stopped and removed at the end. As root, the server runs as the
``postgres`` user (PostgreSQL refuses root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def _tool(name):
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def available():
    """Why no server can be started ('' when one can)."""
    if not (_tool("initdb") and _tool("pg_ctl")):
        return "PostgreSQL is not installed (make test installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run the server"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install '.[postgres]')"
    return ""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server():
    """Start a server; yields the URL of its ``postgres`` database (user ``fiberflow``)."""
    root = tempfile.mkdtemp(prefix="fiberflow-pg-")
    os.chmod(root, 0o755)
    run_as = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, log, port = os.path.join(root, "data"), os.path.join(root, "server.log"), _free_port()
    started = False
    try:
        subprocess.run(run_as + [_tool("initdb"), "-D", data, "--auth=trust", "-U", "fiberflow", "--encoding=UTF8",
                                 "--no-sync"], check=True, capture_output=True, text=True)
        subprocess.run(run_as + [_tool("pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o",
                                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                                 "-c synchronous_commit=off -c full_page_writes=off", "start"],
                       check=True, capture_output=True, text=True)
        started = True
        yield f"postgresql://fiberflow@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(run_as + [_tool("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(url, name):
    """Create database ``name`` on the server of ``url``; returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"
