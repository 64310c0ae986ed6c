"""Fixtures of the stack tests: rendered configs and a real Prometheus running them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.servers import PROMETHEUS, free_port
from support.stack import StackPrometheus, need

from demo.render import StackAddresses, StackConfigFiles, write_stack_configs
from demo.webhook import AlertReceiver


@pytest.fixture(scope="module")
def stack_addresses() -> StackAddresses:
    """Free loopback ports for every component; nothing listens on them but what a test starts."""
    ports = [free_port() for _ in range(5)]
    return StackAddresses(
        serving=f"127.0.0.1:{ports[0]}",
        detector=f"127.0.0.1:{ports[1]}",
        prometheus=f"127.0.0.1:{ports[2]}",
        alertmanager=f"127.0.0.1:{ports[3]}",
        webhook_url=f"http://127.0.0.1:{ports[4]}/alerts",
    )


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, stack_addresses: StackAddresses
) -> StackConfigFiles:
    """The stack's configs rendered for the free ports, 1 s intervals, waits divided by 10."""
    out = tmp_path_factory.mktemp("stack-config")
    return write_stack_configs(out, stack_addresses, scrape_interval="1s", time_scale=0.1)


@pytest.fixture(scope="module")
def stack_prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    rendered: StackConfigFiles,
    stack_addresses: StackAddresses,
) -> Iterator[StackPrometheus]:
    """A real Prometheus running the rendered stack config (its scrape targets are not up)."""
    need(PROMETHEUS)
    workdir = tmp_path_factory.mktemp("stack-prometheus")
    port = int(stack_addresses.prometheus.rsplit(":", 1)[1])
    server = StackPrometheus(workdir=workdir, port=port, config=rendered.prometheus)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[AlertReceiver]:
    """The product's webhook receiver, running; ``.url`` to post to, ``.alerts()`` what arrived."""
    receiver = AlertReceiver().start()
    yield receiver
    receiver.stop()
