"""deploy/kubernetes renders with kustomize into objects Kubernetes would accept, and they agree
with configs/ and with each other: shards from pod ordinals, one replica count, scraped replicas.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.kubernetes import CUSTOM_KINDS, DEPLOY, check_custom, one, render, selects
from support.requires import REPO

from detector.service.config import Shard, load_settings

pytestmark = pytest.mark.integration

# The oldest Kubernetes the manifests claim (README) and the newest schemas known.
VERSIONS = ("1.28", kubernetes_validate.latest_version())
# Where the pod settings may differ from configs/detector.yaml (README, kustomization.yaml):
# history_url comes from the Secret llmwatch-history, and with it history_db goes unused.
OVERRIDDEN = {"prometheus.url", "registry_root", "history_url", "host", "api_token", "shard"}
# Stands in for the Secrets' values where the pods would refuse the placeholders.
REAL_ENV = {
    "LLMWATCH_DETECTOR_API_TOKEN": "a-real-token",
    "LLMWATCH_DETECTOR_HISTORY_URL": "postgresql://llmwatch:secret@db.example:5432/llmwatch",
}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _replicas_and_env(docs: list[dict[str, Any]]) -> tuple[int, str]:
    sts = one(docs, "StatefulSet", "llmwatch-detector")
    return sts["spec"]["replicas"], _env(_container(sts, "detector"))["REPLICAS"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_built_in_object_validates_against_the_kubernetes_schema(
    docs: list[dict[str, Any]], version: str
) -> None:
    errors = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:  # strict: an unknown field (a typo) is an error, as kubectl apply reports it
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path)
            errors.append(f"{doc['kind']} {doc['metadata']['name']} at {where}: {exc.message}")
    assert not errors, f"Kubernetes {version}:\n" + "\n".join(errors)


def test_the_prometheus_operator_objects_hold_their_required_fields(
    docs: list[dict[str, Any]],
) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    # Any other kind goes to kubernetes-validate above, which fails on a kind it does not know.
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            check_custom(doc)


def test_the_replica_count_is_set_once_and_reaches_every_pod(tmp_path: Path) -> None:
    count, env = _replicas_and_env(render())
    assert (count, env) == (3, "3")
    copy = shutil.copytree(DEPLOY, tmp_path / "kubernetes")
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    kustomization["replicas"][0]["count"] = 5
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    assert _replicas_and_env(render(copy)) == (5, "5")
    # An overlay, as README.md shows it: its count, and the replacement repeated after it.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    spec = {
        "resources": ["../kubernetes"],
        "replicas": [{"name": "llmwatch-detector", "count": 7}],
        "replacements": kustomization["replacements"],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    assert _replicas_and_env(render(overlay)) == (7, "7")


def _start(container: dict[str, Any], bindir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the container's shell entry point with a stand-in `llmwatch` that prints its args."""
    assert container["command"] == ["/bin/sh", "-c"]
    fake = bindir / "llmwatch"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["/bin/sh", "-c", container["args"][0]],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_each_pod_scores_the_shard_of_its_ordinal(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    sts = one(docs, "StatefulSet", "llmwatch-detector")
    detector = _container(sts, "detector")
    env = _env(detector)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    count = sts["spec"]["replicas"]
    shards = []
    for ordinal in range(count):
        done = _start(
            detector,
            tmp_path,
            POD_NAME=f"{sts['metadata']['name']}-{ordinal}",
            REPLICAS=env["REPLICAS"],
            **REAL_ENV,
        )
        assert done.returncode == 0, done.stderr
        argv = done.stdout.split()
        assert argv[:3] == ["detect", "--config", "/etc/llmwatch/detector.yaml"]
        assert argv[argv.index("--host") + 1] == "0.0.0.0"
        shards.append(Shard.parse(argv[argv.index("--shard") + 1]))
    assert shards == [Shard(i, count) for i in range(count)]


def test_the_pods_refuse_the_placeholder_tokens(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    secret = one(docs, "Secret", "llmwatch-tokens")
    assert set(secret["data"]) == {"detector-api-token", "serving-admin-token"}
    cases = [
        (_container(one(docs, "StatefulSet", "llmwatch-detector"), "detector"), "DETECTOR_API"),
        (_container(one(docs, "Deployment", "llm-serving"), "serving"), "SERVING_ADMIN"),
    ]
    for container, var in cases:
        ref = _env(container)[f"LLMWATCH_{var}_TOKEN"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert base64.b64decode(secret["data"][ref["key"]]).startswith(b"REPLACE")
        done = _start(container, tmp_path, **{f"LLMWATCH_{var}_TOKEN": "REPLACE-with-a-token"})
        assert done.returncode == 1 and "placeholder" in done.stderr, done


def test_the_detectors_refuse_the_placeholder_history_url(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    secret = one(docs, "Secret", "llmwatch-history")
    assert set(secret["data"]) == {"url"}
    placeholder = base64.b64decode(secret["data"]["url"]).decode()
    assert placeholder.startswith("REPLACE")
    detector = _container(one(docs, "StatefulSet", "llmwatch-detector"), "detector")
    ref = _env(detector)["LLMWATCH_DETECTOR_HISTORY_URL"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "url"}
    pod = {"POD_NAME": "llmwatch-detector-0", "REPLICAS": "1"}
    done = _start(
        detector, tmp_path, **pod, **{**REAL_ENV, "LLMWATCH_DETECTOR_HISTORY_URL": placeholder}
    )
    assert done.returncode == 1 and "llmwatch-history" in done.stderr, done
    assert "placeholder" in done.stderr and not done.stdout, done
    # A real-looking URL and token pass the guard to `llmwatch detect`.
    done = _start(detector, tmp_path, **pod, **REAL_ENV)
    assert done.returncode == 0 and done.stdout.startswith("detect\n"), done


def test_the_config_map_is_configs_detector_yaml(docs: list[dict[str, Any]]) -> None:
    source = yaml.safe_load((REPO / "configs" / "detector.yaml").read_text())
    config = one(docs, "ConfigMap", "llmwatch-detector-config")
    assert yaml.safe_load(config["data"]["detector.yaml"]) == source
    sts = one(docs, "StatefulSet", "llmwatch-detector")
    (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    (mount,) = [m for m in _container(sts, "detector")["volumeMounts"] if m["name"] == "config"]
    assert f"--config {mount['mountPath']}/detector.yaml" in _container(sts, "detector")["args"][0]


def _dump(settings: Any) -> dict[str, Any]:
    data = settings.model_dump()
    data["prometheus.url"] = data["prometheus"].pop("url")
    return {k: v for k, v in data.items() if k not in OVERRIDDEN}


def test_the_pod_settings_are_the_source_but_for_the_documented_overrides(
    docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "detector.yaml"
    config.write_text(one(docs, "ConfigMap", "llmwatch-detector-config")["data"]["detector.yaml"])
    overrides = one(docs, "ConfigMap", "llmwatch-detector-env")["data"]
    assert all(key.startswith("LLMWATCH_DETECTOR_") for key in overrides)
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    for key, value in REAL_ENV.items():  # the Secrets' values, once replaced
        monkeypatch.setenv(key, value)
    pod = load_settings(config, host="0.0.0.0", shard="1/3")  # accepted off loopback
    assert pod.prometheus.url.startswith("http://prometheus-operated.")
    for key in [*overrides, *REAL_ENV]:
        monkeypatch.delenv(key)
    assert _dump(pod) == _dump(load_settings(REPO / "configs" / "detector.yaml"))
    # The registry lives on the pod's persistent volume; the history in the shared database.
    sts = one(docs, "StatefulSet", "llmwatch-detector")
    detector = _container(sts, "detector")
    mounts = {m["name"]: Path(m["mountPath"]) for m in detector["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {"models"}
    assert pod.registry_root == mounts["models"]
    assert pod.history_location == REAL_ENV["LLMWATCH_DETECTOR_HISTORY_URL"]
    secret = one(docs, "Secret", "llmwatch-history")  # named with its content hash
    ref = _env(detector)["LLMWATCH_DETECTOR_HISTORY_URL"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "url"}
    assert base64.b64decode(secret["data"]["url"]).startswith(b"REPLACE")


def test_the_probes_do_not_restart_a_detector_that_waits_for_models(
    docs: list[dict[str, Any]],
) -> None:
    detector = _container(one(docs, "StatefulSet", "llmwatch-detector"), "detector")
    assert "tcpSocket" in detector["livenessProbe"] and "tcpSocket" in detector["startupProbe"]
    assert detector["readinessProbe"]["httpGet"]["path"] == "/health"
    assert detector["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    serving = _container(one(docs, "Deployment", "llm-serving"), "serving")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert serving[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_the_serving_app_requests_a_gpu_and_a_local_model(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment", "llm-serving")
    serving = _container(deployment, "serving")
    for part in ("requests", "limits"):
        assert int(serving["resources"][part]["nvidia.com/gpu"]) == 1
    assert serving["ports"] == [{"name": "http", "containerPort": 8080}]
    assert "--engine vllm --model /models/" in serving["args"][0]
    (mount,) = [m for m in serving["volumeMounts"] if m["mountPath"] == "/models"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)


def _scraped(docs: list[dict[str, Any]], monitor: dict[str, Any]) -> list[dict[str, Any]]:
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = (d for d in docs if d["kind"] == "Service")
    return [s for s in services if selects(selector, s["metadata"].get("labels"))]


def test_prometheus_scrapes_every_replica_once_under_the_rules_job_names(
    docs: list[dict[str, Any]],
) -> None:
    jobs: dict[str, dict[str, Any]] = {}
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        (service,) = _scraped(docs, monitor)  # one Service each: no replica scraped twice
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        jobs[service["metadata"]["name"]] = service  # the job label is the Service's name
    rules = yaml.safe_dump(one(docs, "PrometheusRule", "llmwatch-rules")["spec"])
    assert set(re.findall(r'job="([^"]+)"', rules)) == {"llmwatch-detector", "llm-serving"}
    assert set(jobs) == {"llmwatch-detector", "llm-serving"}
    headless = jobs["llmwatch-detector"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    sts = one(docs, "StatefulSet", "llmwatch-detector")
    assert sts["spec"]["serviceName"] == "llmwatch-detector"
    assert selects(headless["selector"], sts["spec"]["template"]["metadata"]["labels"])


def test_the_prometheusrule_carries_configs_rules(docs: list[dict[str, Any]]) -> None:
    files = sorted((REPO / "configs" / "rules").glob("*.yml"))
    expected = [g for p in files for g in yaml.safe_load(p.read_text())["groups"]]
    assert one(docs, "PrometheusRule", "llmwatch-rules")["spec"]["groups"] == expected
