"""serving/locustfile.py run headless by Locust against a real server on the synthetic engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.serving import LiveServer, build, statuses

pytestmark = pytest.mark.integration

LOCUSTFILE = Path(__file__).resolve().parents[2] / "serving" / "locustfile.py"


def test_locust_drives_the_server_and_flags_invalid_json(tmp_path: Path) -> None:
    app, _, registry = build()
    with LiveServer(app) as server:
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", server.url,
            "--headless", "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "10",
            "--only-summary", "--json", "--loglevel", "WARNING", "--max-tokens", "32",
        ]  # fmt: skip
        # Locust exits 1 when any request failed: invalid JSON answers are failures by design.
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    stats = json.loads(run.stdout)
    by_name = {entry["name"]: entry for entry in stats}
    requests = sum(e["num_requests"] for e in stats)
    failures = sum(e["num_failures"] for e in stats)
    assert requests >= 4
    assert {name.split(":")[0] for name in by_name} == {"chat"}
    plain = sum(e["num_failures"] for n, e in by_name.items() if not n.startswith("chat:json"))
    assert plain == 0
    counted = statuses(registry)
    # Every Locust request reached the server and was counted once; the JSON answers Locust
    # rejected are exactly those the server's quality check counted as json_parse_error.
    assert counted["success"] + counted["json_parse_error"] == requests
    assert counted["json_parse_error"] == failures
