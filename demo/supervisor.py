"""Child processes of the demo, run by honcho: each in its own process group, its output in a log
file, ready once its URL answers, and every one of them stopped whatever happens.

Each child is a Procfile entry (``name: exec command``) run by a honcho Manager whose loop runs in
a thread: honcho starts it in a new session (a Ctrl-C in the terminal reaches only this process),
writes its output, timestamped, to ``<state>/logs/<name>.log`` and signals its whole group (a
server and the workers it forked). One Manager per child, not one for all: the demo starts them
in order, each once the one before answers, and stops and starts Prometheus alone. honcho's rule
holds across them: when a child exits unasked, all the others are stopped at once and
:meth:`Supervisor.check` raises :class:`ChildExited` with the end of its log.

Stopping goes in reverse start order: SIGTERM, SIGKILL after a grace period (a second Ctrl-C
skips it). Pids go to ``<state>/run/<name>.pid``: a supervisor killed with SIGKILL stops nothing,
so the next one on the folder kills the groups it left, if each is still the process it started.

Example::

    with Supervisor(Path("var/demo")) as sup, terminate_on_signals():
        web = sup.start(ProcessSpec(name="web", argv=[...], ready_url="http://127.0.0.1:8080/"))
        ...  # sup.check() raises ChildExited if a child died
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shlex
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import TextIO

import honcho.manager
from honcho.compat import ProcessManager
from honcho.manager import Manager
from honcho.printer import Printer

__all__ = [
    "ChildExited",
    "ManagedProcess",
    "ProcessSpec",
    "Supervisor",
    "http_status",
    "terminate_on_signals",
]

_POLL_S = 0.2
_START_TIMEOUT_S = 30.0
_NICE = shutil.which("nice") or "/usr/bin/nice"
_GROUPS = ProcessManager()  # honcho's killpg, quiet about groups already gone

# honcho's command line runs one Manager in a single-threaded process; here each Manager's loop
# runs in a thread, so honcho.manager gets two modules of its own. A `signal` that installs
# nothing: the loop would handle SIGINT and SIGTERM, which Python allows in the main thread only,
# where terminate_on_signals handles them. The fork server's multiprocessing: a child's helper
# process forked from this multi-threaded one could inherit a lock another thread holds (stdout's,
# as the demo prints), hang on exit, and hang this process as it joins its children at exit.
honcho.manager.signal = SimpleNamespace(
    SIGINT=signal.SIGINT, SIGTERM=signal.SIGTERM, signal=lambda signum, handler: None
)
honcho.manager.multiprocessing = multiprocessing.get_context("forkserver")


class ChildExited(RuntimeError):
    """A child exited on its own (or never became ready); the message ends with its log's tail."""


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """How to run one child.

    Parameters
    ----------
    name
        Short name: Procfile entry, log file ``<name>.log`` and pid file ``<name>.pid``.
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
    ready_url: str | None = None
    ready_codes: frozenset[int] = frozenset({200})
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    nice: int = 0

    def command(self) -> str:
        """The Procfile entry's command line, run by ``sh -c``; ``exec``, so that the pid
        honcho reports, signals and waits for is the program's, not the shell's."""
        argv = [_NICE, "-n", str(self.nice), *self.argv] if self.nice else list(self.argv)
        return "exec " + shlex.join(argv)


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


class ManagedProcess:
    """One child: a honcho Manager running its Procfile entry; see :class:`Supervisor`.

    ``on_exit`` is called (in the Manager's thread) once the child has exited.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        log_path: Path,
        pid_path: Path,
        on_exit: Callable[[ManagedProcess], None] | None = None,
    ) -> None:
        self.spec = spec
        self.log_path = log_path
        self.pid_path = pid_path
        self.stopping = False
        self._on_exit = on_exit
        self._manager: Manager | None = None
        self._loop: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """Process id (also the process group id); None until honcho has started it."""
        if self._manager is None:
            return None
        # The Manager learns it from the start event of its process and has no accessor for it.
        return self._manager._processes[self.spec.name].get("pid")

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited (negative: the signal that ended it)."""
        return None if self._manager is None else self._manager.returncode

    @property
    def running(self) -> bool:
        """Whether the child is started and has not exited."""
        return self._manager is not None and self.returncode is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's combined output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def launch(self) -> None:
        """Start the child; once (a honcho Manager runs its processes once)."""
        log = self.log_path.open("a", encoding="utf-8")
        manager = Manager(Printer(log, colour=False))
        manager.add_process(
            self.spec.name, self.spec.command(), env={**os.environ, **self.spec.env}
        )
        self._manager = manager
        self._loop = threading.Thread(
            target=self._run, args=(manager, log), name=f"honcho-{self.spec.name}", daemon=True
        )
        self._loop.start()
        pid = self._wait_started()
        if pid is None:
            raise ChildExited(self._exit_message("did not start"))
        self.pid_path.write_text(f"{pid} {_start_time(pid) or ''}\n")

    def _run(self, manager: Manager, log: TextIO) -> None:
        manager.loop()  # returns once the child has exited and its output is written
        log.close()
        if self._on_exit is not None:
            self._on_exit(self)

    def _wait_started(self) -> int | None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while self.pid is None and self.running and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pid

    def _exit_message(self, what: str) -> str:
        code = self.returncode
        status = f" (exit status {code})" if code is not None else ""
        return f"{self.spec.name} {what}{status}; end of {self.log_path}:\n{self.log_tail()}"

    def stop(self, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM the group, SIGKILL it after ``stop_timeout`` (at once once ``hurry`` is set).

        Returns the child's exit status (None if it was never started).
        """
        if self._manager is None:
            return None
        self.stopping = True
        # honcho can signal the child only once it knows its pid (Manager.terminate needs it).
        if self.running and self._wait_started() is not None:
            self._manager.terminate()
            deadline = time.monotonic() + self.spec.stop_timeout
            while self.running and time.monotonic() < deadline and not (hurry and hurry.is_set()):
                time.sleep(0.05)
            self._manager.kill()  # does nothing once the child has exited
        self._finish()
        return self.returncode

    def kill(self) -> None:
        """Crash the child (SIGKILL to its group) as a real outage would; start it again with
        :meth:`Supervisor.start`."""
        if self._manager is not None and self.running and self.pid is not None:
            self.stopping = True
            self._manager.kill()
            self._finish()

    def _finish(self) -> None:
        # honcho waits for the child's output to close, not for the whole group: a worker that
        # closed its output outlives the program in the group, so the group goes too.
        pid = self.pid
        if pid is not None:
            _GROUPS.kill(pid)
        if self._loop is not None:
            self._loop.join(10)
        self.pid_path.unlink(missing_ok=True)


class Supervisor:
    """Starts children, stops them all when one exits, and stops them all on exit.

    Parameters
    ----------
    state_dir
        Logs go to ``state_dir/logs``, pid files to ``state_dir/run``.
    """

    def __init__(self, state_dir: Path) -> None:
        self.log_dir = Path(state_dir) / "logs"
        self.run_dir = Path(state_dir) / "run"
        self.children: list[ManagedProcess] = []
        self.failed: ManagedProcess | None = None
        self._hurry = threading.Event()

    def __enter__(self) -> Supervisor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reap_stale()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        self.stop_all()
        # Once a child has exited the others are stopped, and whatever the caller was doing fails
        # (a request refused, a child not ready): the child that exited is the error to show.
        if isinstance(exc, Exception) and not isinstance(exc, ChildExited) and self.failed:
            raise ChildExited(self.failed._exit_message("exited unexpectedly")) from exc

    def reap_stale(self) -> None:
        """Kill the process groups a previous supervisor on this folder left running."""
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            head, _, started = pid_file.read_text().strip().partition(" ")
            with contextlib.suppress(ValueError):
                pid = int(head)
                if started and _start_time(pid) == started:
                    _GROUPS.kill(pid)
            pid_file.unlink(missing_ok=True)

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        """Launch ``spec`` and wait until it is ready; on failure it is stopped and raised.

        A stopped child of the same name is replaced (to restart with other arguments).
        """
        self.check()
        for old in [c for c in self.children if c.spec.name == spec.name]:
            if old.running:
                raise ValueError(f"a child named {spec.name!r} is running already")
            self.children.remove(old)
        child = ManagedProcess(
            spec,
            self.log_dir / f"{spec.name}.log",
            self.run_dir / f"{spec.name}.pid",
            on_exit=self._exited,
        )
        self.children.append(child)
        try:
            child.launch()
            self._wait_ready(child)
        except BaseException:
            child.stop(self._hurry)
            raise
        return child

    def _wait_ready(self, child: ManagedProcess) -> None:
        spec = child.spec
        if spec.ready_url is None:
            return
        deadline = time.monotonic() + spec.ready_timeout
        while http_status(spec.ready_url) not in spec.ready_codes:
            if not child.running and self.failed in (None, child):
                raise ChildExited(child._exit_message("exited before it was ready"))
            self.check()  # another child exited: this one is being stopped with the rest
            if time.monotonic() > deadline:
                what = f"not ready at {spec.ready_url} after {spec.ready_timeout:g} s"
                raise ChildExited(child._exit_message(what))
            time.sleep(_POLL_S)

    def _exited(self, child: ManagedProcess) -> None:
        # Called in the child's Manager thread once it has exited. honcho's rule, across the
        # Managers: one child exits, all stop. In a thread of its own, since stopping joins this
        # one's, and while the caller goes on until its next check().
        if child.stopping or self.failed is not None:
            return
        self.failed = child
        threading.Thread(target=self.stop_all, name="stop-all", daemon=True).start()

    def get(self, name: str) -> ManagedProcess:
        """The child called ``name``."""
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    def check(self) -> None:
        """Raise :class:`ChildExited` if a child exited without being asked to."""
        if self.failed is not None:
            raise ChildExited(self.failed._exit_message("exited unexpectedly"))

    def stop_all(self) -> None:
        """Stop every child, last started first. Safe to call twice, and from two threads."""
        children = self.children[::-1]
        for child in children:
            child.stopping = True  # from here on an exit is asked for, not a failure
        with _hurry_on_signals(self._hurry):
            for child in children:
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
