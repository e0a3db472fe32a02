"""The admission chain: every plugin, in one order, stage by stage.

The registry runs `admit` and `validate` around each write and
`validate_stored` on the object a write would change; the gRPC service runs
`validate_request` right after authorization. A stage runs its plugins in the
chain's order, and the first refusal ends the request.

Besides refusing, a plugin may warn the client or annotate the audit record
(warnings.py): a transport wraps a request in `admission.recording()` and
sends what was recorded; a dry-run write is marked there too, for the audit
record. The apiserver configures the chain once at start-up:
`set_authorizer`, `disable` (its --disable-admission-plugins) and
`set_reserved_host_ports` (its --reserved-host-ports).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import (
    AsyncMutationInterface,
    MutationInterface,
    PolicyWatcher,
    Request,
    RequestValidator,
    StoredObjectValidator,
    ValidationInterface,
    WantsAuthorizer,
)
from controlplane.apiserver.admission.reservedhostports import ReservedHostPorts
from controlplane.apiserver.admission.warnings import mark_dry_run
from controlplane.apiserver.auth import Attributes, Authorizer


def plugin_name(plugin: object) -> str:
    """A plugin's name in Kubernetes' words (its NAME), as flags and messages use it."""
    return str(getattr(plugin, "NAME", type(plugin).__name__))


class Chain:
    """Ordered admission plugins, sorted once into the stages each implements."""

    def __init__(self, plugins: Sequence[object]) -> None:
        self.plugins = list(plugins)
        self._sort()

    def _sort(self) -> None:
        self._request = [p for p in self.plugins if isinstance(p, RequestValidator)]
        self._stored = [p for p in self.plugins if isinstance(p, StoredObjectValidator)]
        self._mutating = [p for p in self.plugins if isinstance(p, MutationInterface)]
        self._async_mutating = [p for p in self.plugins if isinstance(p, AsyncMutationInterface)]
        self._validating = [p for p in self.plugins if isinstance(p, ValidationInterface)]
        self.policy_watchers = [p for p in self.plugins if isinstance(p, PolicyWatcher)]

    def set_authorizer(self, authorizer: Authorizer) -> None:
        """Hand the authorizer to the plugins that check permissions of their own (CSR approval)."""
        for plugin in self.plugins:
            if isinstance(plugin, WantsAuthorizer):
                plugin.set_authorizer(authorizer)

    @property
    def names(self) -> list[str]:
        return [plugin_name(p) for p in self.plugins]

    def disable(self, names: Iterable[str]) -> None:
        """Take plugins out of the chain by name (kube-apiserver's --disable-admission-plugins)."""
        unknown = set(names) - set(self.names)
        if unknown:
            raise ValueError(f"unknown admission plugins: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(self.names)})")
        self.plugins = [p for p in self.plugins if plugin_name(p) not in set(names)]
        self._sort()

    def set_reserved_host_ports(self, ports: Iterable[int]) -> None:
        """The host ports no pod may use, in any namespace: those the control plane listens on."""
        for plugin in self.plugins:
            if isinstance(plugin, ReservedHostPorts):
                plugin.ports = frozenset(ports)

    async def validate_request(self, attrs: Attributes) -> None:
        for plugin in self._request:
            await plugin.validate_request(attrs)

    def validate_stored(self, attrs: Attributes | None, stored: Message) -> None:
        if attrs is None:  # the apiserver's own writes
            return
        for plugin in self._stored:
            plugin.validate_stored(attrs, stored)

    def admit(self, request: Request) -> None:
        if request.dry_run:
            mark_dry_run()
        for plugin in self._mutating:
            plugin.admit(request)

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        """Await the asynchronous mutations (webhooks), then enter every validating plugin in order; the write
        happens inside."""
        if request.dry_run:
            mark_dry_run()  # for the request's audit record (in-memory kinds skip `admit`)
        for mutator in self._async_mutating:
            await mutator.mutate(request)
        async with AsyncExitStack() as stack:
            for plugin in self._validating:
                await stack.enter_async_context(plugin.validate(request))
            yield
