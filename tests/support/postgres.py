"""A real PostgreSQL server for tests: Debian's binaries, no mocks, no packaged cluster.

:class:`PostgresServer` runs ``initdb`` and ``postgres`` from the newest
``/usr/lib/postgresql/<ver>/bin`` (:data:`POSTGRES_BIN`) in a temporary folder of its own, on a
free 127.0.0.1 port, trust authentication for the role ``llmwatch``, durability turned off
(tests want speed, not crash safety of the test data). ``start``, ``stop``, ``kill`` (SIGKILL,
for outage tests) and ``start`` again on the same data and port, as the servers of
:mod:`support.servers` offer.

The folder comes from :func:`tempfile.mkdtemp`, not pytest's ``tmp_path``: ``initdb`` refuses
to run as root, so under root the server runs as the ``postgres`` system user, which cannot
enter pytest's root-only (0700) temporary folders.

Fixtures (``tests/conftest.py``): ``postgres_server`` is one server for the whole session and
``postgres_url`` a fresh, empty database on it for each test (isolation without a server
start per test). A test needing it fails when the binaries are missing, or skips where that is
allowed (:mod:`support.requires`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from support.servers import free_port

__all__ = ["POSTGRES_BIN", "PostgresServer", "find_postgres_bin"]

USER = "llmwatch"
DATABASE = "llmwatch"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_postgres_bin(root: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """The newest Debian PostgreSQL ``bin`` folder with ``initdb`` and ``postgres``, or None.

    Debian installs each major version side by side and puts neither binary on ``PATH``.
    """

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)

    found = [
        b
        for b in root.glob("*/bin")
        if os.access(b / "initdb", os.X_OK) and os.access(b / "postgres", os.X_OK)
    ]
    return max(found, key=version) if found else None


POSTGRES_BIN: Path | None = find_postgres_bin()


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, reachable at :attr:`url`.

    Example::

        server = PostgresServer().start()
        server.url  # "postgresql://llmwatch@127.0.0.1:<port>/llmwatch"
        other = server.new_database("t1")  # ".../t1", empty
        server.kill(); server.start()  # an outage, then recovery on the same data and port
        server.stop()  # and the folder is gone
    """

    def __init__(
        self, bin_dir: Path | None = None, port: int | None = None, *, durable: bool = False
    ) -> None:
        self.bin_dir = bin_dir or POSTGRES_BIN
        self.port = port or free_port()
        self.durable = durable  # fsync as in production (benchmarks); off for tests' speed
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``llmwatch`` database's URL (created by :meth:`start`)."""
        return self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    @property
    def data_dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("not started")
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _run_as(self) -> dict[str, Any]:
        """``subprocess`` arguments: the ``postgres`` user under root (initdb refuses root)."""
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _binary(self, name: str) -> str:
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
        return str(self.bin_dir / name)

    def _make_dir(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llmwatch-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        argv = [self._binary("initdb"), "-D", str(self.data_dir), "-U", USER, "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        done = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, check=False, **self._run_as()
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start (or restart on the same data and port) and wait until it takes connections."""
        if self.running:
            raise RuntimeError("already running")
        if self.dir is None:
            self._make_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        assert self.dir is not None
        argv = [self._binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        # No fsync (speed), but synchronous_commit stays on: a commit reaches the kernel before it
        # returns, so kill() loses nothing acknowledged, as a real server's process crash does not.
        settings = ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.dir}"]
        if not self.durable:
            settings += ["fsync=off", "full_page_writes=off"]
        for setting in settings:
            argv += ["-c", setting]
        with self.log_path.open("ab") as log:
            # Its own process group, so kill() takes the backends down with the postmaster.
            self._proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._run_as(),
            )
        self._wait_ready(timeout)
        self._create_database(DATABASE)
        return self

    def _log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self._proc.returncode if self._proc else None
                raise RuntimeError(f"postgres exited ({code}): {self._log_tail()}")
            try:
                with psycopg.connect(self.database_url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres not ready after {timeout} s: {self._log_tail()}")

    def _create_database(self, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def new_database(self, name: str) -> str:
        """Create database ``name`` (lowercase identifier) and return its URL.

        Tests share one server and each gets its own database: isolation without a start each.
        """
        self._create_database(name)
        return self.database_url(name)

    def _wait_exit(self, timeout: float) -> bool:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _killpg(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._wait_exit(15.0)

    def kill(self) -> None:
        """Crash it (SIGKILL to it and its backends): an outage; :meth:`start` recovers it."""
        if self._proc is not None and self.running:
            self._killpg()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 15 s; then delete the folder and its data."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGINT)
            if not self._wait_exit(15.0):
                self._killpg()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
