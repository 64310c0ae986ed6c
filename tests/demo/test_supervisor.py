"""The demo's process supervisor: readiness, stopping whole process groups, leftovers, signals."""

from __future__ import annotations

import os
import signal
import sys
import time
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


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_a_child_is_ready_once_its_url_answers_and_stops_with_its_group(tmp_path: Path) -> None:
    # The child forks a grandchild that would outlive it; stopping the group takes both.
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; exec sleep 300"
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="pair", argv=["sh", "-c", script]))
        grandchild = int(wait_for_file(pid_file))
        assert child.running and alive(grandchild)
        assert (tmp_path / "run" / "pair.pid").exists()
        sup.check()
    assert not child.running
    assert not alive(grandchild)
    assert not (tmp_path / "run" / "pair.pid").exists()


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


def test_check_reports_a_child_that_exited_on_its_own(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="short", argv=["sh", "-c", "echo bye; exit 4"]))
        child.proc.wait(10)
        with pytest.raises(ChildExited, match=r"short exited unexpectedly \(exit status 4\)"):
            sup.check()


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


def test_kill_and_restart(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="svc", argv=["sleep", "60"]))
        first = child.pid
        child.kill()
        assert not child.running
        sup.check()  # killed on purpose: not a failure
        sup.restart(child)
        assert child.running and child.pid != first


def test_a_new_supervisor_reaps_what_a_crashed_one_left(tmp_path: Path) -> None:
    crashed = Supervisor(tmp_path).__enter__()  # never exited: as if killed with SIGKILL
    orphan = crashed.start(ProcessSpec(name="orphan", argv=["sleep", "300"]))
    # A pid file whose process is not the one it names (another start time) is left alone.
    bystander = crashed.start(ProcessSpec(name="bystander", argv=["sleep", "300"]))
    (tmp_path / "run" / "bystander.pid").write_text(f"{bystander.pid} 1\n")
    with Supervisor(tmp_path) as fresh:
        assert fresh.children == []
    deadline = time.monotonic() + 10
    while orphan.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not orphan.running
    assert bystander.running
    bystander.stop()
    assert list((tmp_path / "run").glob("*.pid")) == []


def test_sigterm_unwinds_like_ctrl_c(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(ProcessSpec(name="svc", argv=["sleep", "60"]))
        with pytest.raises(KeyboardInterrupt), terminate_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert not child.running
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
