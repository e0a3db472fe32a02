"""The apiserver's own CRD loop: accept names, establish, serve, and clean up on delete.

apiextensions-apiserver runs these as controllers inside the apiserver (naming,
establishing, finalizer), because serving a kind is the apiserver's business and
every apiserver of a cluster must serve the same kinds. Here one loop does all
three, fed by the registry's list-then-watch of CRDs (registry.mirror, as the
apiserver's other caches), one CRD at a time from a queue:

- **NamesAccepted**: the CRD's plural, singular, kind, listKind and short names
  must not be taken by another CRD of its group (or, for short names, by any
  served kind); accepted names go to status.acceptedNames;
- **Established**: once the names are accepted, the CRD's served versions are
  served (served.py: routing, discovery, OpenAPI, its strategy) and the
  condition says so;
- **deletion**: a CRD being deleted stops being served (condition Terminating),
  its objects are deleted through the registry (their own finalizers honoured),
  and once none is left the `customresourcecleanup.apiextensions.k8s.io`
  finalizer comes off, which lets the registry delete the CRD;
- **namespaces**: a namespace being deleted loses its custom objects too (the
  namespace controller deletes the kinds table's kinds over gRPC, and custom
  kinds are HTTP-only). Unlike Kubernetes, the namespace does not wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from google.protobuf.message import Message

from controlplane.apiserver.crd.definitions import (
    CLEANUP_FINALIZER,
    CRD,
    ESTABLISHED,
    NAMES_ACCEPTED,
    TERMINATING,
    condition,
)
from controlplane.apiserver.crd.served import SERVED, CustomKind, kinds_of
from controlplane.apiserver.registry import Registry
from proto import apiextensions_pb2, kinds
from proto.errors import ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

DEFINITIONS = kinds.resolve("customresourcedefinitions")
NAMESPACES = kinds.resolve("namespaces")
NAMESPACE_KEY = "namespace/"  # queue keys of namespaces to empty; CRD names never contain a "/"
_RETRY_SECONDS = 1.0


class DefinitionLoop:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.known: dict[str, CRD] = {}  # every CRD as last seen, for name conflicts
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    # ------------------------------------------------------------ feeding

    def observe(self, event_type: str, obj: Message) -> None:
        assert isinstance(obj, CRD)
        name = obj.metadata.name
        if event_type == "DELETED":
            self.known.pop(name, None)
        else:
            self.known[name] = obj
        self.queue.put_nowait(name)

    def reset(self) -> None:
        self.known.clear()

    def observe_namespace(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        if event_type == "DELETED" or meta.HasField("deletion_timestamp"):
            self.queue.put_nowait(NAMESPACE_KEY + meta.name)

    async def run(self) -> None:
        worker = asyncio.create_task(self._work())
        try:
            await asyncio.gather(self.registry.mirror(DEFINITIONS, self.observe, self.reset),
                                 self.registry.mirror(NAMESPACES, self.observe_namespace, lambda: None))
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                again = await self.sync(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost race or a storage hiccup: try again shortly
                if not isinstance(exc, Conflict):
                    log.warning("CustomResourceDefinition %s: %s", name, exc)
                again = True
            if again:
                asyncio.get_running_loop().call_later(_RETRY_SECONDS, self.queue.put_nowait, name)

    # ------------------------------------------------------------ one CRD

    async def sync(self, name: str) -> bool:
        """Converge one CRD (or empty one namespace); True asks to be called again later."""
        if name.startswith(NAMESPACE_KEY):
            return await self._empty_namespace(name.removeprefix(NAMESPACE_KEY))
        try:
            crd = await self.registry.get(DEFINITIONS, "", name)
        except NotFound:
            SERVED.remove(name)
            return False
        assert isinstance(crd, CRD)
        if crd.metadata.HasField("deletion_timestamp"):
            return await self._finalize(crd)
        accepted, message = self._names_accepted(crd)
        status = CRD()
        status.CopyFrom(crd)
        if accepted:
            status.status.accepted_names.CopyFrom(crd.spec.names)
            _set_condition(status, NAMES_ACCEPTED, "True", "NoConflicts", "no conflicts found")
            _set_condition(status, ESTABLISHED, "True", "InitialNamesAccepted", "the initial names have been "
                                                                                "accepted")
        else:
            _set_condition(status, NAMES_ACCEPTED, "False", "NameConflict", message)
            _set_condition(status, ESTABLISHED, "False", "NotAccepted", "not all names are accepted")
        if status.status != crd.status:
            updated = await self.registry.update(DEFINITIONS, "", status, subresource="status")
            assert isinstance(updated, CRD)
            crd = updated
        if accepted:
            SERVED.establish(crd)
        else:
            SERVED.remove(name)
        return False

    def _names_accepted(self, crd: CRD) -> tuple[bool, str]:
        names, group = crd.spec.names, crd.spec.group
        for other in self.known.values():
            if other.metadata.name == crd.metadata.name or other.spec.group != group:
                continue
            taken = other.status.accepted_names
            if names.plural and names.plural == taken.plural:
                return False, f'"{names.plural}" is already in use'
            if names.singular and names.singular in (taken.plural, taken.singular):
                return False, f'"{names.singular}" is already in use'
            if names.kind and names.kind in (taken.kind, taken.list_kind):
                return False, f'"{names.kind}" is already in use'
            if names.list_kind and names.list_kind in (taken.kind, taken.list_kind):
                return False, f'"{names.list_kind}" is already in use'
            shared = set(names.short_names) & set(taken.short_names)
            if shared:
                return False, f'"{sorted(shared)[0]}" is already in use'
        for short in names.short_names:
            with contextlib.suppress(NotFound):
                kinds.resolve(short)
                return False, f'"{short}" is already in use'
        return True, ""

    async def _empty_namespace(self, namespace: str) -> bool:
        """A namespace going away takes its custom objects with it (the namespace controller knows only
        the kinds table's kinds, over gRPC); True while some are held by finalizers of their own."""
        remaining = 0
        for crd in list(self.known.values()):
            served = kinds_of(crd)
            if served and served[0].namespaced:
                remaining += await self._delete_objects(served[0], namespace)
        return remaining > 0

    async def _delete_objects(self, kind: CustomKind, namespace: str) -> int:
        """Delete every object of `kind` (in `namespace`; "" for all); how many are still there."""
        items, _, _, _ = await self.registry.list(kind, namespace)
        for raw in items:
            obj = apiextensions_pb2.CustomResource()
            obj.ParseFromString(raw)
            if obj.metadata.HasField("deletion_timestamp"):
                continue  # already going, held by its finalizers
            with contextlib.suppress(NotFound):
                await self.registry.delete(kind, obj.metadata.namespace, obj.metadata.name)
        remaining, _, _, _ = await self.registry.list(kind, namespace)
        return len(remaining)

    async def _finalize(self, crd: CRD) -> bool:
        """Stop serving, delete every object, then let the CRD go."""
        SERVED.remove(crd.metadata.name)
        if CLEANUP_FINALIZER not in crd.metadata.finalizers:
            return False
        if condition(crd, TERMINATING) is None:
            terminating = CRD()
            terminating.CopyFrom(crd)
            _set_condition(terminating, TERMINATING, "True", "InstanceDeletionInProgress",
                           "CustomResource deletion is in progress")
            _set_condition(terminating, ESTABLISHED, "False", "Terminating", "the CustomResourceDefinition is "
                                                                             "being deleted")
            updated = await self.registry.update(DEFINITIONS, "", terminating, subresource="status")
            assert isinstance(updated, CRD)
            crd = updated
        served = kinds_of(crd)
        if served and await self._delete_objects(served[0], ""):
            return True  # objects with finalizers of their own: wait for them
        done = CRD()
        done.CopyFrom(crd)
        del done.metadata.finalizers[:]
        done.metadata.finalizers.extend(f for f in crd.metadata.finalizers if f != CLEANUP_FINALIZER)
        try:
            await self.registry.update(DEFINITIONS, "", done)
        except NotFound:
            pass
        return False


def _set_condition(crd: CRD, kind: str, status: str, reason: str, message: str) -> None:
    found = condition(crd, kind)
    if found is None:
        found = crd.status.conditions.add(type=kind)
    if found.status != status:
        found.last_transition_time.FromSeconds(int(time.time()))
    found.status, found.reason, found.message = status, reason, message


async def serve_definitions(registry: Registry) -> None:
    """Run for the apiserver's life (controlplane/apiserver/main.py starts it beside its other caches)."""
    try:
        await DefinitionLoop(registry).run()
    except ApiError as exc:  # pragma: no cover - mirror retries by itself; this is the last word
        log.error("CustomResourceDefinition loop ended: %s", exc)
