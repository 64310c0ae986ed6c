"""The Kubernetes manifests of ``deploy/kubernetes`` as tests see them: rendered and checked.

- :func:`render` — ``kubectl kustomize`` of a folder, as a list of objects (kubectl bundles
  kustomize; the test needing it fails or skips through :func:`support.requires.need_binary`).
- :func:`generator` — ``deploy/kubernetes/generate.py`` imported from its path (it is a script,
  not part of any package).
- :func:`check_custom` — the prometheus-operator objects against the part of their CRD schemas
  that the manifests use. kubernetes-validate knows the built-in kinds only, and the CRDs cannot
  be fetched offline; a field the manifests start using must be added here.
- :func:`one`, :func:`selects` — lookups over rendered objects.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import yaml

from support.requires import REPO, need_binary

__all__ = [
    "CUSTOM_KINDS",
    "DEPLOY",
    "KUBECTL",
    "check_custom",
    "generator",
    "one",
    "render",
    "selects",
]

DEPLOY = REPO / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

# Prometheus durations, as the CRDs' pattern (e.g. 30s, 1h30m).
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$",
}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": _LABELS},
}
_RELABEL_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"]
_RELABELING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
        },
        "separator": {"type": "string"},
        "regex": {"type": "string"},
        "targetLabel": {"type": "string"},
        "replacement": {"type": "string"},
        "action": {"enum": _RELABEL_ACTIONS + [a.title() for a in _RELABEL_ACTIONS]},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "interval": _DURATION,
        "relabelings": {"type": "array", "items": _RELABELING},
    },
}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    # The CRD accepts either; Prometheus refuses a rule that is both or neither.
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
}


def _custom(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


CUSTOM_KINDS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _custom(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
        }
    ),
    "PrometheusRule": _custom(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {"type": "array", "minItems": 1, "items": _RULE},
                        },
                    },
                }
            },
        }
    ),
}


def render(folder: Path = DEPLOY) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` renders; fails with kubectl's message."""
    need_binary(KUBECTL, "kubectl >= 1.27, which bundles kustomize v5 (Kubernetes' apt repository)")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def generator() -> ModuleType:
    """``deploy/kubernetes/generate.py`` as a module."""
    spec = importlib.util.spec_from_file_location("kubernetes_generate", DEPLOY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_custom(doc: dict[str, Any]) -> None:
    """Raise :class:`jsonschema.ValidationError` where ``doc`` breaks its CRD's schema (part)."""
    jsonschema.validate(doc, CUSTOM_KINDS[doc["kind"]])


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The rendered object of ``kind`` called ``name``, or ``name`` plus a generator's hash."""
    pattern = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    found = [d for d in docs if d["kind"] == kind and pattern.fullmatch(d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    """Whether a ``matchLabels`` selector matches ``labels``."""
    return all((labels or {}).get(key) == value for key, value in selector.items())
