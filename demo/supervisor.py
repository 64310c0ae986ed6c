"""Child processes of the demo: start each in its own process group, wait until it answers, and
stop every one of them, whatever happens.

Each child runs in a new session (its own process group), so a Ctrl-C in the terminal reaches
only the supervising process, which then stops the children in reverse start order: SIGTERM to
the whole group (a server and the workers it forked), SIGKILL to what is left after a grace
period. A second Ctrl-C during shutdown skips the grace periods. The group ids are written to
``<run_dir>/<name>.pid``; a later supervisor on the same folder kills groups a crashed or killed
(SIGKILL) predecessor left behind, after checking each is still the process it started.

Example::

    with Supervisor(Path("var/demo")) as sup, terminate_on_signals():
        web = sup.start(ProcessSpec(name="web", argv=[...], ready_url="http://127.0.0.1:8080/"))
        ...  # sup.check() raises ChildExited if a child died
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

__all__ = [
    "ChildExited",
    "ManagedProcess",
    "ProcessSpec",
    "Supervisor",
    "http_status",
    "terminate_on_signals",
]

_POLL_S = 0.2
_NICE = shutil.which("nice") or "/usr/bin/nice"


class ChildExited(RuntimeError):
    """A child exited on its own (or never became ready); the message ends with its log's tail."""


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """How to run one child.

    Parameters
    ----------
    name
        Short name: log file ``<name>.log`` and pid file ``<name>.pid``.
    argv
        Command line.
    env
        Variables added to (or replacing those of) this process's environment.
    ready_url
        Started means this URL answers with a status in ``ready_codes``; None: started at once.
    ready_timeout
        Seconds to wait for readiness before giving up.
    stop_timeout
        Seconds between SIGTERM and SIGKILL.
    nice
        Scheduling niceness (0-19): background work that must not slow the others down.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_url: str | None = None
    ready_codes: frozenset[int] = frozenset({200})
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    nice: int = 0


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET on ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _start_time(pid: int) -> str | None:
    # Field 22 of /proc/<pid>/stat: a pid reused by another process has another start time.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a group of someone else's: not ours to stop
        return False
    return True


class ManagedProcess:
    """One running child; see :class:`Supervisor`."""

    def __init__(self, spec: ProcessSpec, log_path: Path, pid_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.pid_path = pid_path
        self.proc: subprocess.Popen | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        """Process id (also the process group id), None before the start."""
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's combined output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def launch(self) -> None:
        """Start the child in a new session, output appended to its log file."""
        if self.running:
            raise RuntimeError(f"{self.spec.name} is already running")
        self.stopping = False
        env = {**os.environ, **self.spec.env}
        argv = list(self.spec.argv)
        if self.spec.nice:
            argv = [_NICE, "-n", str(self.spec.nice), *argv]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.spec.cwd,
                env=env,
                start_new_session=True,
            )
        started = _start_time(self.proc.pid) or ""
        self.pid_path.write_text(f"{self.proc.pid} {started}\n")

    def wait_ready(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Block until ``ready_url`` answers; :class:`ChildExited` if it dies or times out."""
        spec = self.spec
        if spec.ready_url is None:
            return
        deadline = time.monotonic() + spec.ready_timeout
        while not cancelled():
            if not self.running:
                raise ChildExited(self._exit_message("exited before it was ready"))
            if http_status(spec.ready_url) in spec.ready_codes:
                return
            if time.monotonic() > deadline:
                what = f"not ready at {spec.ready_url} after {spec.ready_timeout:g} s"
                raise ChildExited(self._exit_message(what))
            time.sleep(_POLL_S)

    def _exit_message(self, what: str) -> str:
        code = self.proc.poll() if self.proc is not None else None
        status = f" (exit status {code})" if code is not None else ""
        return f"{self.spec.name} {what}{status}; end of {self.log_path}:\n{self.log_tail()}"

    def stop(self, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM the group, SIGKILL it after ``stop_timeout`` (at once once ``hurry`` is set).

        Returns the child's exit status (None if it was never started).
        """
        if self.proc is None:
            return None
        self.stopping = True
        pgid = self.proc.pid
        if self.proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.spec.stop_timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if hurry is not None and hurry.is_set():
                    break
                time.sleep(0.05)
        # Whatever of the group is left (the leader, or workers it did not take down with it).
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.pid_path.unlink(missing_ok=True)
        return self.proc.returncode

    def kill(self) -> None:
        """Crash the child (SIGKILL to its group) as a real outage would; ``launch`` restarts it."""
        if self.proc is not None and self.proc.poll() is None:
            self.stopping = True
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Supervisor:
    """Starts children, notices when one dies, and stops them all on exit.

    Parameters
    ----------
    state_dir
        Logs go to ``state_dir/logs``, pid files to ``state_dir/run``.
    """

    def __init__(self, state_dir: Path) -> None:
        self.log_dir = Path(state_dir) / "logs"
        self.run_dir = Path(state_dir) / "run"
        self.children: list[ManagedProcess] = []
        self._hurry = threading.Event()
        self._cancel = threading.Event()

    def __enter__(self) -> Supervisor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reap_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def reap_stale(self) -> list[int]:
        """Kill the process groups a previous supervisor on this folder left running."""
        killed = []
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            head, _, started = pid_file.read_text().strip().partition(" ")
            with contextlib.suppress(ValueError):
                pid = int(head)
                if started and _start_time(pid) == started and _signal_group(pid, signal.SIGKILL):
                    killed.append(pid)
            pid_file.unlink(missing_ok=True)
        return killed

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        """Launch ``spec`` and wait until it is ready; on failure it is stopped and raised.

        A stopped child of the same name is replaced (to restart with other arguments).
        """
        for old in [c for c in self.children if c.spec.name == spec.name]:
            if old.running:
                raise ValueError(f"a child named {spec.name!r} is running already")
            self.children.remove(old)
        child = ManagedProcess(
            spec, self.log_dir / f"{spec.name}.log", self.run_dir / f"{spec.name}.pid"
        )
        self.children.append(child)
        child.launch()
        try:
            child.wait_ready(self._cancel.is_set)
        except BaseException:
            child.stop(self._hurry)
            raise
        return child

    def restart(self, child: ManagedProcess) -> None:
        """Start a stopped (or killed) child again and wait until it is ready."""
        child.launch()
        child.wait_ready(self._cancel.is_set)

    def get(self, name: str) -> ManagedProcess:
        """The child called ``name``."""
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    def check(self) -> None:
        """Raise :class:`ChildExited` if a child exited without being asked to."""
        for child in self.children:
            if not child.stopping and not child.running:
                raise ChildExited(child._exit_message("exited unexpectedly"))

    def stop_all(self) -> None:
        """Stop every child, last started first. Safe to call twice."""
        self._cancel.set()
        with _hurry_on_signals(self._hurry):
            for child in reversed(self.children):
                child.stop(self._hurry)


@contextlib.contextmanager
def _hurry_on_signals(hurry: threading.Event) -> Iterator[None]:
    # During shutdown another Ctrl-C or SIGTERM means "faster", not "abandon the children".
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for signum in previous:
        signal.signal(signum, lambda *_: hurry.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`KeyboardInterrupt`, as Ctrl-C already is.

    The ``with`` blocks around the work then unwind (and stop the children) however the process
    is asked to end. Only in the main thread; elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for signum in previous:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
