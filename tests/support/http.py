"""A cookie-keeping HTTP client for the console's server-side tests and bench, on aiohttp (the
product's one HTTP client library): a session like a browser's, every answer read whole.

    async with SessionClient("http://127.0.0.1:50080") as client:
        page = await client.get("/signin")
        answer = await client.post("/signin", data={"csrf": csrf, "token": token})
        assert answer.status_code == 303 and answer.headers["location"] == "/"

Redirects are not followed unless asked (`follow_redirects=True`): the tests check them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Answer:
    status_code: int
    text: str
    headers: Any  # aiohttp's case-insensitive multidict: ["name"], .get, .getall


class SessionClient:
    def __init__(self, base_url: str, *, follow_redirects: bool = False, timeout: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.follow_redirects = follow_redirects
        # unsafe=True: keep cookies of an IP-address host (127.0.0.1), as a browser does.
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def get(
        self, path: str, *, params: Mapping[str, str] | None = None, follow_redirects: bool | None = None
    ) -> Answer:
        return await self._call("GET", path, params=params, follow_redirects=follow_redirects)

    async def post(
        self, path: str, *, data: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        return await self._call("POST", path, data=data, headers=headers)

    async def _call(
        self, method: str, path: str, *, follow_redirects: bool | None = None, **kwargs: Any
    ) -> Answer:
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        async with self._session.request(
            method, self.base_url + path, allow_redirects=follow, **kwargs
        ) as response:
            return Answer(response.status, await response.text(), response.headers)
