"""The token cleaner: deletes bootstrap token Secrets once they expire.

An expired token already fails authentication (the apiserver checks the
expiration on every use); this controller removes the Secret itself, as
kube-controller-manager's tokencleaner does, so `kctl token list` shows only
live tokens. A token not yet expired is re-queued for the moment it will be.
"""

from __future__ import annotations

import datetime as dt
import logging

from client import Client, InformerFactory, bootstrap, key_of
from client.controller import Controller
from proto import core_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)


class TokenCleaner(Controller):
    name = "tokencleaner"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 1) -> None:
        super().__init__(client, factory, workers=workers)
        self.secrets = factory.informer(core_pb2.Secret, bootstrap.TOKEN_NAMESPACE,
                                        field_selector=f"type={bootstrap.TOKEN_SECRET_TYPE}")
        self.informers = [self.secrets]
        self.secrets.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new))

    def _enqueue(self, secret: core_pb2.Secret) -> None:
        if bootstrap.is_token_secret(secret):
            self.queue.add(key_of(secret))

    async def sync(self, key: str) -> None:
        secret = self.secrets.store.get(key)
        if secret is None or not bootstrap.is_token_secret(secret):
            return
        expires = bootstrap.expiration(secret)
        if expires is None:
            return
        left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        if left > 0:
            self.queue.add_after(key, left + 0.1)
            return
        try:
            await self.client.delete(core_pb2.Secret, secret.metadata.name, secret.metadata.namespace,
                                     uid=secret.metadata.uid)
        except (NotFound, Conflict):
            return
        log.info("deleted expired bootstrap token %s (expired %s)", key, bootstrap.rfc3339(expires))
