"""The service-account controller: a `default` ServiceAccount in every namespace.

As kube-controller-manager's serviceaccount-controller, it watches namespaces and
the accounts named `default`; a namespace without one (new, or whose account was
deleted) gets it back. Pods that name no account run as `default`, and the
ServiceAccount admission plugin refuses pods whose account does not exist, so this
is what lets a fresh namespace run pods at all. A terminating namespace is left
alone: the namespace controller is emptying it.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory
from client.controller import Controller
from proto import core_pb2
from proto.errors import AlreadyExists, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)

DEFAULT = "default"


class ServiceAccountsController(Controller):
    name = "serviceaccount"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.namespaces = factory.informer(core_pb2.Namespace)
        self.accounts = factory.informer(core_pb2.ServiceAccount, field_selector=f"metadata.name={DEFAULT}")
        self.informers = [self.namespaces, self.accounts]
        self.namespaces.add_handler(on_add=self._enqueue_namespace,
                                    on_update=lambda _old, new: self._enqueue_namespace(new))
        self.accounts.add_handler(on_delete=lambda sa: self.queue.add(sa.metadata.namespace))

    def _enqueue_namespace(self, ns: core_pb2.Namespace) -> None:
        self.queue.add(ns.metadata.name)

    def resync(self) -> None:
        """Keys are namespace names: queue every namespace (the other informer's keys are not keys here)."""
        for key in self.namespaces.store.list_keys():
            self.queue.add(key)

    async def sync(self, key: str) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or ns.status.phase == "Terminating" or ns.metadata.HasField("deletion_timestamp"):
            return
        if self.accounts.store.get(f"{key}/{DEFAULT}") is not None:
            return
        sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
        sa.metadata.name, sa.metadata.namespace = DEFAULT, key
        try:
            await self.client.create(sa)
        except (AlreadyExists, NamespaceTerminating, NotFound):
            return
        log.info("created ServiceAccount %s/%s", key, DEFAULT)
