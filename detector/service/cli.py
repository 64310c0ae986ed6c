"""``llmwatch detect`` (the service) and ``llmwatch train`` (fit and publish, no service needed)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/detector.yaml"),
        help="YAML settings (default configs/detector.yaml); LLMWATCH_DETECTOR_* env overrides",
    )
    p.add_argument("--prometheus-url", help="Prometheus-compatible query API (overrides config)")
    p.add_argument("--shard", help="i/n: this replica's share of the series (overrides config)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``detect`` and ``train`` to the ``llmwatch`` command line."""
    p = sub.add_parser(
        "detect",
        help="run the detector service (pull, score, export /metrics, REST API)",
        description="Pull the configured signals from Prometheus every interval, score them, "
        "export llmwatch_* metrics on /metrics, serve the REST API (/docs) and record anomaly "
        "events; refit models in the background and hot-swap new registry versions.",
    )
    _common(p)
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9105)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--reset-history",
        action="store_true",
        help="if the event history is unreadable, move it aside and begin a new one",
    )
    p.set_defaults(func=_run_detect)

    p = sub.add_parser(
        "train",
        help="fit signal models from Prometheus history (or a file) and publish them",
        description="Fit each configured signal (or one) on its training window and publish "
        "the model to the registry, where a running service picks it up.",
    )
    _common(p)
    p.add_argument("--signal", help="only this signal (default: all)")
    p.add_argument(
        "--input",
        type=Path,
        help="CSV/Parquet with timestamp and one column per signal (instead of Prometheus)",
    )
    p.set_defaults(func=_run_train)


def _settings(args: argparse.Namespace, **extra: object):  # -> DetectorSettings
    from detector.service.config import load_settings

    overrides: dict[str, object] = {"shard": args.shard, **extra}
    if args.prometheus_url:
        overrides["prometheus"] = {"url": args.prometheus_url}
    return load_settings(args.config, **overrides)


def _run_detect(args: argparse.Namespace) -> int:
    import uvicorn

    from detector.service.history import check_history
    from detector.service.server import create_app

    settings = _settings(args, host=args.host, port=args.port)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    aside = check_history(settings.history_location, reset=args.reset_history)
    if aside is not None:
        logging.getLogger(__name__).warning(
            "the event history was unreadable: moved to %s; beginning a new one", aside
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from detector.registry.store import ModelRegistry
    from detector.service.source import FileSource, PrometheusSource, SourceError
    from detector.service.training import train_signal

    settings = _settings(args)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        signals = [settings.signal(args.signal)] if args.signal else settings.signals
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if not signals:
        raise ValueError(f"{args.config}: no signals configured")
    end = None
    if args.input:
        source = FileSource(args.input)
        end = source.frame.index[-1].timestamp() if source.frame.shape[0] else None
    else:
        source = PrometheusSource(settings.prometheus)
    registry = ModelRegistry(settings.registry_root)
    published = 0
    for signal in signals:
        try:
            version = train_signal(settings, signal, source, registry, end=end)
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        line = {"signal": signal.name, "version": None, "series": 0}
        if version is not None:
            published += 1
            line.update(version=version.version, series=version.params.get("series"))
            line["path"] = str(version.path)
        print(json.dumps(line))
    return 0 if published else 1
