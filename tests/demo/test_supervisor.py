"""The demo's process supervisor on honcho: readiness, stopping whole process groups, one exit
stopping all, leftovers of a killed supervisor, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from demo.launch import pick_port
from demo.supervisor import (
    ChildExited,
    ProcessSpec,
    Supervisor,
    http_status,
    terminate_on_signals,
)

pytestmark = pytest.mark.integration

PY = sys.executable


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s"
        time.sleep(0.05)


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    wait_until(lambda: path.exists() and path.read_text().strip(), timeout)
    return path.read_text().strip()


def test_a_child_runs_in_its_own_group_logs_its_output_and_stops_with_its_group(
    tmp_path: Path,
) -> None:
    # The child forks a grandchild that would outlive it; stopping the group takes both.
    pid_file = tmp_path / "grandchild.pid"
    script = f"echo hello from pair; sleep 300 & echo $! > {pid_file}; exec sleep 300"
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="pair", argv=["sh", "-c", script]))
        grandchild = int(wait_for_file(pid_file))
        assert child.running and alive(grandchild)
        # honcho runs `exec <argv>`: the pid in the pid file is the program's and its group's.
        assert int((tmp_path / "run" / "pair.pid").read_text().split()[0]) == child.pid
        assert os.getpgid(grandchild) == child.pid != os.getpgrp()
        sup.check()
    assert not child.running and not alive(grandchild)
    assert child.returncode == -signal.SIGTERM
    assert not (tmp_path / "run" / "pair.pid").exists()
    log = (tmp_path / "logs" / "pair.log").read_text()
    assert "pair   | hello from pair" in log
    assert "sending SIGTERM to pair" in log


def test_readiness_waits_until_the_url_answers(tmp_path: Path) -> None:
    port = pick_port(None)
    url = f"http://127.0.0.1:{port}/"
    # Python's start-up takes longer than the first probe: start() must wait for it.
    argv = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(tmp_path)]
    with Supervisor(tmp_path) as sup:
        sup.start(ProcessSpec(name="web", argv=argv, ready_url=url, ready_timeout=30))
        assert http_status(url) == 200
    assert http_status(url) is None


def test_a_child_that_dies_before_it_is_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    argv = [PY, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    with Supervisor(tmp_path) as sup, pytest.raises(ChildExited) as exc:
        sup.start(ProcessSpec(name="broken", argv=argv, ready_url="http://127.0.0.1:9/"))
    message = str(exc.value)
    assert "broken exited before it was ready (exit status 3)" in message
    assert "bad flag --nope" in message


def test_a_child_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup, pytest.raises(ChildExited, match="not ready"):
        sup.start(
            ProcessSpec(
                name="mute", argv=["sleep", "60"], ready_url="http://127.0.0.1:9/", ready_timeout=1
            )
        )
    assert not sup.children[0].running
    assert sup.failed is None  # stopped on purpose


def test_one_child_exiting_stops_all_and_is_the_error(tmp_path: Path) -> None:
    # honcho's rule, across the children: one exits on its own, every other one is stopped.
    with Supervisor(tmp_path) as sup:
        steady = sup.start(ProcessSpec(name="steady", argv=["sleep", "60"]))
        sup.start(ProcessSpec(name="short", argv=["sh", "-c", "sleep 0.5; echo bye; exit 4"]))
        wait_until(lambda: not steady.running)
        assert steady.returncode == -signal.SIGTERM
        with pytest.raises(
            ChildExited, match=r"short exited unexpectedly \(exit status 4\)"
        ) as exc:
            sup.check()
        assert "short  | bye" in str(exc.value)
        with pytest.raises(ChildExited, match="short exited"):
            sup.start(ProcessSpec(name="late", argv=["sleep", "60"]))


def test_an_error_that_follows_from_a_child_exiting_is_reported_as_the_child(
    tmp_path: Path,
) -> None:
    port = pick_port(None)
    argv = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(tmp_path)]
    url = f"http://127.0.0.1:{port}/"
    with (
        pytest.raises(ChildExited, match="web exited unexpectedly") as exc,
        Supervisor(tmp_path) as sup,
    ):
        web = sup.start(ProcessSpec(name="web", argv=argv, ready_url=url, ready_timeout=30))
        os.kill(web.pid, signal.SIGKILL)  # not through the supervisor: a crash
        wait_until(lambda: sup.failed is not None)
        urllib.request.urlopen(url, timeout=5)  # refused: the caller's own error
    assert isinstance(exc.value.__cause__, urllib.error.URLError)
    assert "(exit status -9)" in str(exc.value)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').write('1')\n"
        "time.sleep(300)\n"
    )
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="stubborn", argv=[PY, "-c", code], stop_timeout=1))
        wait_for_file(ready)
        began = time.monotonic()
        status = child.stop()
    assert status == -signal.SIGKILL
    assert 0.9 < time.monotonic() - began < 15


def test_a_killed_child_is_no_failure_and_starts_again(tmp_path: Path) -> None:
    spec = ProcessSpec(name="svc", argv=["sleep", "60"])
    with Supervisor(tmp_path) as sup:
        first = sup.start(spec)
        first_pid = first.pid
        first.kill()
        assert not first.running and first.returncode == -signal.SIGKILL
        sup.check()  # killed on purpose: not a failure
        second = sup.start(spec)
        assert second.running and second.pid != first_pid
        assert sup.get("svc") is second


def test_a_new_supervisor_reaps_what_a_killed_one_left(tmp_path: Path) -> None:
    # A supervisor killed with SIGKILL stops nothing: its children run on in their own groups.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from demo.supervisor import ProcessSpec, Supervisor\n"
        "with Supervisor(Path(sys.argv[1])) as sup:\n"
        "    sup.start(ProcessSpec(name='orphan', argv=['sleep', '300']))\n"
        "    print('started', flush=True)\n"
        "    time.sleep(300)\n"
    )
    crashed = subprocess.Popen([PY, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    # A pid file whose process is not the one it names (another start time) is left alone.
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        assert crashed.stdout is not None and crashed.stdout.readline() == "started\n"
        orphan = int((tmp_path / "run" / "orphan.pid").read_text().split()[0])
        crashed.kill()
        crashed.wait(10)
        assert alive(orphan)
        (tmp_path / "run" / "bystander.pid").write_text(f"{bystander.pid} 1\n")
        with Supervisor(tmp_path) as fresh:
            assert fresh.children == []
        wait_until(lambda: not alive(orphan))
        assert bystander.poll() is None
        assert list((tmp_path / "run").glob("*.pid")) == []
    finally:
        crashed.kill()
        bystander.kill()
        bystander.wait(10)


def test_sigterm_unwinds_like_ctrl_c(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="svc", argv=["sleep", "60"]))
        with pytest.raises(KeyboardInterrupt), terminate_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert not child.running
    assert sup.failed is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
