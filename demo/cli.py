"""``llmwatch stack``: render the stack's configuration and regenerate its Grafana dashboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="write prometheus.yml, rules/ and alertmanager.yml for other addresses",
        description="Write a copy of configs/prometheus.yml, configs/rules/*.yml and "
        "configs/alertmanager.yml with other addresses and shorter waiting times.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--serving", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.add_argument("--detector", default="127.0.0.1:9105", metavar="HOST:PORT")
    p.add_argument("--prometheus", default="127.0.0.1:9090", metavar="HOST:PORT")
    p.add_argument("--alertmanager", default="127.0.0.1:9093", metavar="HOST:PORT")
    p.add_argument("--webhook-url", default="http://127.0.0.1:5001/alerts", metavar="URL")
    p.add_argument("--scrape-interval", help="global scrape and evaluation interval, e.g. 1s")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="factor on every `for`, keep_firing_for and Alertmanager wait (default 1)",
    )
    p.add_argument("--runbook-base", metavar="URL", help="replaces docs/runbook.md in runbook_url")
    p.set_defaults(func=_run_render)


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="regenerate configs/grafana/llmwatch.json from the recording rules",
    )
    p.add_argument("--out", type=Path, help="output file (default: configs/grafana/llmwatch.json)")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that the file is up to date (exit 1 if not)",
    )
    p.set_defaults(func=_run_dashboard)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``stack`` subcommand and its own subcommands."""
    parser = sub.add_parser("stack", help="Prometheus, Alertmanager and Grafana configuration")
    inner = parser.add_subparsers(dest="stack_command", required=True)
    _add_render(inner)
    _add_dashboard(inner)


def _run_render(args: argparse.Namespace) -> int:
    from demo.render import StackAddresses, write_stack_configs

    addresses = StackAddresses(
        serving=args.serving,
        detector=args.detector,
        prometheus=args.prometheus,
        alertmanager=args.alertmanager,
        webhook_url=args.webhook_url,
    )
    files = write_stack_configs(
        args.out_dir,
        addresses,
        scrape_interval=args.scrape_interval,
        time_scale=args.time_scale,
        runbook_base=args.runbook_base,
    )
    for path in (files.prometheus, *files.rule_files, files.alertmanager):
        print(path)
    return 0


def _run_dashboard(args: argparse.Namespace) -> int:
    from demo.dashboard import dashboard_json, default_dashboard_path

    target = args.out or default_dashboard_path()
    text = dashboard_json()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run `llmwatch stack dashboard`", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(target)
    return 0
