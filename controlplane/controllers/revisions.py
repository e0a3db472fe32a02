"""ControllerRevisions through the API: the history a StatefulSet (or DaemonSet) writes and reads.

history.py says what a revision *is* (pure: its data, hash, template, which old
ones to drop); this module is the part that talks to the apiserver, as
Kubernetes' history.NewHistory: it lists the revisions an owner controls (with
the ones just written and not yet in the informer's cache), adopts orphans its
selector matches, records the owner's current template as the newest revision —
creating it, or renumbering an old one on rollback — and deletes revisions
beyond the history limit.

A name collision (another template hashed to the same name) bumps the owner's
`status.collisionCount` and fails the sync, so the next one hashes anew, as the
DaemonSet and StatefulSet controllers of Kubernetes do.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from client import Client, Informer
from client.controller import MutationCache, copy
from controlplane.controllers import history, podutil
from proto import apps_pb2, selectors
from proto.errors import AlreadyExists, Conflict, NotFound


class ControllerHistory:
    """The revisions of one kind of owner (StatefulSet or DaemonSet), read from `revisions`' cache."""

    def __init__(self, client: Client, revisions: Informer[apps_pb2.ControllerRevision]) -> None:
        self.client = client
        self.revisions = revisions
        # Revisions we just wrote, until the informer shows them (no second create or renumbering).
        self.written = MutationCache()

    def owned(self, owner: Message) -> list[apps_pb2.ControllerRevision]:
        meta: Any = getattr(owner, "metadata")  # noqa: B009
        namespace = meta.namespace
        return [cr for cr in self.written.merge(self.revisions.store.list_by_namespace(namespace), namespace)
                if (ref := podutil.controller_ref(cr)) is not None and ref.uid == meta.uid]

    async def adopt(self, owner: Message, selector: selectors.LabelSelector) -> None:
        """Make orphaned revisions that `selector` matches the owner's (ControllerRefManager)."""
        meta: Any = getattr(owner, "metadata")  # noqa: B009
        for cr in self.revisions.store.list_by_namespace(meta.namespace):
            if podutil.controller_ref(cr) is None and selector.matches(cr.metadata.labels) \
                    and not cr.metadata.HasField("deletion_timestamp"):
                adopted = copy(cr)
                podutil.set_controller(adopted, owner)
                try:
                    self.written.remember(await self.client.update(adopted))
                except (Conflict, NotFound):
                    continue

    async def record(self, owner: Any, selector: selectors.LabelSelector
                     ) -> tuple[apps_pb2.ControllerRevision, list[apps_pb2.ControllerRevision]]:
        """(the revision of the owner's current template, all its other revisions), writing what must change.

        The current template's revision always has the highest number: a new template
        gets max + 1, and an old one brought back (a rollback) is renumbered to max + 1.
        """
        await self.adopt(owner, selector)
        revisions = self.owned(owner)
        current = [cr for cr in revisions if history.matches(cr, owner.spec.template)]
        others = [cr for cr in revisions if not history.matches(cr, owner.spec.template)]
        next_revision = history.max_revision(others) + 1
        if not current:
            return await self._snapshot(owner, next_revision), others
        # Several revisions of one template (a lost race): keep the newest, delete the rest.
        current.sort(key=lambda cr: cr.revision, reverse=True)
        keep = current[0]
        for extra in current[1:]:
            await self.delete(extra)
        if keep.revision < next_revision:
            renumbered = copy(keep)
            renumbered.revision = next_revision
            keep = await self.client.update(renumbered)
            self.written.remember(keep)
        return keep, others

    async def _snapshot(self, owner: Any, revision: int) -> apps_pb2.ControllerRevision:
        collision_count = owner.status.collision_count
        cr = history.new_revision(owner, owner.spec.template, revision, collision_count)
        try:
            created = await self.client.create(cr)
        except AlreadyExists:
            existing = await self.client.get(apps_pb2.ControllerRevision, cr.metadata.name, cr.metadata.namespace)
            ref = podutil.controller_ref(existing)
            if ref is not None and ref.uid == owner.metadata.uid and history.matches(existing, owner.spec.template):
                self.written.remember(existing)
                return existing  # ours, from a sync our cache has not caught up with
            # Another template (or owner) has this name: hash again with the collision count bumped.
            fresh = await self.client.get(type(owner), owner.metadata.name, owner.metadata.namespace)
            if fresh.status.collision_count == collision_count:
                fresh.status.collision_count = collision_count + 1
                await self.client.update_status(fresh)
            raise Conflict(f'hash collision for ControllerRevision "{cr.metadata.name}"; retrying') from None
        self.written.remember(created)
        return created

    async def delete(self, cr: apps_pb2.ControllerRevision) -> None:
        try:
            await self.client.delete(apps_pb2.ControllerRevision, cr.metadata.name, cr.metadata.namespace,
                                     uid=cr.metadata.uid)
        except (NotFound, Conflict):
            pass
        self.written.forget(cr)

    async def truncate(self, old: list[apps_pb2.ControllerRevision], limit: int, live: set[str]) -> None:
        """Keep at most `limit` of the revisions in `old` that nothing uses (by name in `live`), newest first."""
        for cr in history.to_delete([cr for cr in old if cr.metadata.name not in live], limit, set()):
            await self.delete(cr)
