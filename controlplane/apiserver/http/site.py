"""The apiserver's HTTP listener: aiohttp's TCP site under the connection limits of controlplane/connlimits.py.

Every connection to the Kubernetes HTTP API goes through the per-source cap
and the first-byte deadline, and a TLS handshake has its own deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web

from controlplane.connlimits import HANDSHAKE_TIMEOUT, SourceLimit, limited


class LimitedSite(web.TCPSite):
    """aiohttp's TCPSite with the per-source cap, the first-byte deadline and the TLS handshake deadline."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 limit: SourceLimit | None = None, **kwargs: Any) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, **kwargs)
        self.limit = limit or SourceLimit(what="HTTP API connections")

    async def start(self) -> None:
        self._runner._reg_site(self)  # BaseSite.start: TCPSite.start would open a listener of its own
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            limited(server, self.limit), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context is not None else None)
