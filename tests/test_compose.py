"""docker-compose.yml's structure (no Docker engine runs here): every service, pinned images,
ports, volumes, healthchecks, start order on health, and only configuration the code reads."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.config import COMPOSE_RULE_FILES, COMPOSE_TARGETS, PROMETHEUS_CONFIG

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "components", "features", "ingest", "serving", "workflows", "monitoring",
            "benchmarks", "fraudflow")
SERVICES = {
    "kafka", "zookeeper", "openmldb-nameserver", "openmldb-tablet-1", "openmldb-tablet-2",
    "openmldb-taskmanager", "dolphinscheduler", "init", "predict", "ingest", "archive",
    "workflow-metrics", "prometheus", "grafana",
}
ONE_SHOT = {"init"}
PUBLISHED_PORTS = {"predict": 8881, "prometheus": 9090, "grafana": 3000,
                   "dolphinscheduler": 12345}
CONFIG_PREFIXES = ("FRAUDFLOW_", "KAFKA_", "PYDS_")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _our_images(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running images built from this repository (they run our code)."""
    return {name: service for name, service in services.items() if "build" in service}


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in {"", "latest"}


def test_every_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert _pinned(service["image"]), f"{name}: {service['image']}"
    dockerfiles = {service["build"]["dockerfile"] for service in services.values()
                   if "build" in service}
    assert dockerfiles == {"docker/Dockerfile", "docker/dolphinscheduler.Dockerfile"}
    for dockerfile in dockerfiles:
        text = (REPO / dockerfile).read_text()
        bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
        copied = re.findall(r"COPY\s+--from=(\S+)", text)
        stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE))
        assert bases
        for image in [*bases, *(c for c in copied if c not in stages)]:
            assert _pinned(image), f"{dockerfile}: {image}"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, port in PUBLISHED_PORTS.items():
        assert f"{port}:{port}" in services[name]["ports"], name
    # replicas cannot share a host port
    assert "ports" not in services["ingest"]
    assert services["ingest"]["deploy"]["replicas"] >= 2


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no"
            assert "healthcheck" not in service
        else:
            test = service["healthcheck"]["test"]
            assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name


def test_start_order_waits_on_health_and_completion(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} -> {dependency}"
            expected = ("service_completed_successfully" if dependency in ONE_SHOT
                        else "service_healthy")
            assert how == {"condition": expected}, f"{name} -> {dependency}"
    # the app waits for the one-shot init, which waits for the stores and the scheduler
    for name in ("predict", "ingest", "archive"):
        assert "init" in services[name]["depends_on"]
    assert {"kafka", "dolphinscheduler", "openmldb-taskmanager"} <= \
        set(services["init"]["depends_on"])


def _volume_sources(service: dict[str, Any]) -> list[str]:
    return [mount.split(":", 1)[0] for mount in service.get("volumes", [])]


def test_volumes_are_named_or_files_of_this_repository(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for source in _volume_sources(service):
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
                used.add(source)
    assert used == declared
    # every process that hands files to another by path sees the same /data
    for name in ("archive", "predict", "openmldb-taskmanager", "dolphinscheduler", "init"):
        assert "fraudflow-data:/data" in compose["services"][name]["volumes"], name


def _read_by_code() -> set[str]:
    """Environment variables the packages read: every *ENV_VARS table, and every name passed to
    os.environ / getenv or bound to a *_ENV constant."""
    names: set[str] = set()
    direct = re.compile(r"""(?:environ(?:\.get)?|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
    constant = re.compile(r"""^\s*[A-Z_]*ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE)
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            names |= set(direct.findall(text)) | set(constant.findall(text))
            for table in re.findall(r"^(\w*ENV_VARS)\b", text, re.MULTILINE):
                module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                names |= set(getattr(importlib.import_module(module), table).values())
    return names


def test_app_config_is_what_the_code_reads(services: dict[str, dict[str, Any]]) -> None:
    read = _read_by_code()
    assert {"FRAUDFLOW_STORE_URL", "KAFKA_BOOTSTRAP_SERVERS", "FRAUDFLOW_LAKE_DIR",
            "FRAUDFLOW_MODEL_DIR", "FRAUDFLOW_ADMIN_TOKEN", "FRAUDFLOW_PREDICT_URLS"} <= read
    # pydolphinscheduler reads its PYDS_* variables itself
    sdk = importlib.import_module("pydolphinscheduler.configuration")
    read |= set(re.findall(r"\"(PYDS_[A-Z_]+)\"", Path(str(sdk.__file__)).read_text()))
    for name, service in _our_images(services).items():
        for key in service.get("environment", {}):
            if key.startswith(CONFIG_PREFIXES):
                assert key in read, f"{name}: nothing reads {key}"
    app = services["predict"]["environment"]
    assert app["FRAUDFLOW_STORE_URL"] == "openmldb:///demo_db?zk=zookeeper:2181&zkPath=/openmldb"
    assert app["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["init"]["environment"]["PYDS_JAVA_GATEWAY_ADDRESS"] == "dolphinscheduler"


def test_prometheus_scrapes_the_services_on_the_ports_they_serve(
        services: dict[str, dict[str, Any]]) -> None:
    for hosts in COMPOSE_TARGETS.values():
        for host_port in hosts:
            host, _, port = host_port.rpartition(":")
            assert host in services, host_port
            probe = " ".join(services[host]["healthcheck"]["test"])
            assert f":{port}/" in probe, f"{host} is probed on another port than {port}"
    mounts = services["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONFIG.relative_to(REPO)}:/etc/prometheus/prometheus.yml:ro" in mounts
    rules_dir = str(Path(COMPOSE_RULE_FILES[0]).parent)
    assert f"./monitoring/rules:{rules_dir}:ro" in mounts


def test_compose_runs_the_dolphinscheduler_the_client_speaks_and_the_tests_run() -> None:
    from importlib.metadata import version

    from components.dolphinscheduler.server import VERSION

    dockerfile = (REPO / "docker" / "dolphinscheduler.Dockerfile").read_text()
    base = re.search(r"^FROM apache/dolphinscheduler-standalone-server:(\S+)$", dockerfile,
                     re.MULTILINE)
    assert base is not None
    assert base[1] == VERSION == version("apache-dolphinscheduler")
