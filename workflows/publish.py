"""Step `publish`: make the accepted candidate the production model, everywhere or nowhere.

Each predict server gets `POST <url>/update` with the seed's body {"model_path", "database",
"deployment"} (and the admin bearer token), retried on connection errors and 429/502/503/504.
Only when every configured server took the model is it promoted in the registry (unless a
server sharing the registry already did), whose pointer every server follows. If any server
fails, the servers that already switched are sent the previous production model again, the
registry keeps pointing at it and the step fails, so the old model keeps serving everywhere.
With no servers configured, publishing is promoting: the servers follow the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core.config import Settings
from core.registry import ModelVersion, Registry
from workflows.alerting import PUBLISHED, record_outcome
from workflows.exceptions import PublishError
from workflows.gate import read_decision
from workflows.layout import Layout
from workflows.window import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishTarget:
    urls: Sequence[str]
    admin_token: str | None
    retries: int
    timeout_seconds: float


def update_body(version: ModelVersion) -> dict[str, str]:
    metadata = version.metadata
    return {"model_path": str(version.model_file.absolute()),
            "database": metadata["database"], "deployment": metadata["deployment"]}


def publish(settings: Settings, layout: Layout, window: Window, target: PublishTarget) -> str:
    decision = read_decision(layout, window)
    if not decision.passed:
        raise PublishError(f"the gate rejected candidate {decision.candidate_version}: "
                           "not publishing it")
    registry = Registry(settings.model_dir)
    candidate = registry.get(decision.candidate_version)
    previous = registry.production()
    updated = _update_servers(target, candidate, previous)
    # A predict server sharing this registry promotes the model itself on /update.
    production = registry.production()
    if production is None or production.version != candidate.version:
        registry.promote(candidate.version)
    record_outcome(layout, settings.model_dir, PUBLISHED, f"{window.id}/{candidate.version}",
                   decision.candidate_metrics["auc"])
    servers = f"{len(updated)} predict server(s)" if updated else "no predict server configured"
    return f"{candidate.version} is production ({servers})"


def _update_servers(target: PublishTarget, candidate: ModelVersion,
                    previous: ModelVersion | None) -> list[str]:
    if not target.urls:
        return []
    session = _session(target)
    updated: list[str] = []
    failures: dict[str, str] = {}
    for url in target.urls:
        try:
            _post_update(session, url, update_body(candidate), target.timeout_seconds)
            updated.append(url)
        except requests.RequestException as exc:
            failures[url] = str(exc)
    if not failures:
        return updated
    restored = _restore(session, updated, previous, target.timeout_seconds)
    problems = "; ".join(f"{url}: {error}" for url, error in failures.items())
    raise PublishError(f"{len(failures)} of {len(target.urls)} predict server(s) did not take "
                       f"{candidate.version} ({problems}); {restored}")


def _restore(session: requests.Session, urls: list[str], previous: ModelVersion | None,
             timeout: float) -> str:
    """Send the servers that switched back to the previous model; says how that went."""
    if not urls:
        return "no server switched: the previous model keeps serving"
    if previous is None:
        return (f"{', '.join(urls)} now serve the candidate and there is no previous production "
                "model to restore")
    stuck = []
    for url in urls:
        try:
            _post_update(session, url, update_body(previous), timeout)
        except requests.RequestException as exc:
            log.error("could not restore %s on %s: %s", previous.version, url, exc)
            stuck.append(url)
    if stuck:
        return f"restoring {previous.version} failed on {', '.join(stuck)}"
    return f"{', '.join(urls)} were switched back to {previous.version}"


def _session(target: PublishTarget) -> requests.Session:
    # POST /update is idempotent (load this model), so retrying a POST is safe.
    retry = Retry(total=target.retries, connect=target.retries, read=target.retries,
                  status=target.retries, backoff_factor=0.5,
                  status_forcelist=(429, 502, 503, 504), allowed_methods=frozenset({"POST"}),
                  raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if target.admin_token:
        session.headers["Authorization"] = f"Bearer {target.admin_token}"
    return session


def _post_update(session: requests.Session, url: str, body: dict[str, Any],
                 timeout: float) -> None:
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/update"):
        endpoint += "/update"
    response = session.post(endpoint, json=body, timeout=timeout)
    response.raise_for_status()
    log.info("%s took %s", endpoint, body["model_path"])
