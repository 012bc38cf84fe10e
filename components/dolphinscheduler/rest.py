"""A small client of DolphinScheduler's REST API (3.1.x): a logged-in session and its replies.

Every reply is ``{"code": 0, "msg": …, "data": …}``; a non-zero code is an error whose message
DolphinScheduler wrote for people. The session id from ``POST /login`` goes in a header.
"""

from __future__ import annotations

from typing import Any

import requests

from components.exceptions import DolphinSchedulerError

#: The admin account every fresh DolphinScheduler database has.
DEFAULT_USER = "admin"
DEFAULT_PASSWORD = "dolphinscheduler123"


class RestError(DolphinSchedulerError):
    """DolphinScheduler's REST API cannot be reached or refused a request."""


class DolphinSchedulerRest:
    """A logged-in REST session against `url` (``http://host:port/dolphinscheduler``)."""

    def __init__(self, url: str, user: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD,
                 timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        data = self._call("POST", "/login", data={"userName": user, "userPassword": password})
        self.session.headers["sessionId"] = str(data["sessionId"])

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, **data: Any) -> Any:
        return self._call("POST", path, data=data)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> DolphinSchedulerRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"{self.url}{path}"
        try:
            reply = self.session.request(method, where, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise RestError(f"DolphinScheduler's REST API at {self.url} cannot be reached: "
                            f"{type(exc).__name__}") from None
        try:
            body = reply.json()
        except ValueError:
            raise RestError(f"{method} {where} answered HTTP {reply.status_code} without "
                            "JSON: is this DolphinScheduler's REST API?") from None
        if not isinstance(body, dict) or body.get("code") != 0:
            message = body.get("msg") if isinstance(body, dict) else body
            raise RestError(f"{method} {path} refused by DolphinScheduler: {message}")
        return body.get("data")
