"""`apply` and `create -f`: from manifests to stored objects, all-or-nothing on validation.

Apply is declarative. For an object that exists it computes a three-way merge,
as kubectl does for JSON merge patches: the live object is the base, fields in
the manifest override it, and fields that were in the previous manifest (the
`kubectl.kubernetes.io/last-applied-configuration` annotation) but are gone
from this one are removed. Fields nobody declared (server defaults, a label
set by `kctl label`, status) stay. Lists of objects are merged item by item by
their key (`name`, `containerPort`, `port`...), so defaults the server filled
into a container survive and an identical re-apply is "unchanged".

Both commands run in two passes: first every document is checked by the
server with a dry run (so `containerPort: 70000` in the third document stores
nothing from the first two), then the writes happen in file order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from client import Client
from client.retry import retry_write
from kctl import resources
from kctl.errors import message
from kctl.manifests import Document
from proto import manifest
from proto.errors import ApiError, BadRequest, NotFound
from proto.wellknown import ANNOTATION_LAST_APPLIED

# Metadata only the server writes: never taken from a manifest (think `get -o yaml | apply -f -`).
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                   "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
# How kubectl's strategic merge identifies an item in a list of objects.
MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "ip", "type")

Echo = Callable[[str], None]
# apply() and create(): write documents, report each, True when all succeeded.
Writer = Callable[[Client, list[Document], Echo, Echo], Awaitable[bool]]


# ---------------------------------------------------------------- the merge


def applied_configuration(obj: Message) -> dict[str, Any]:
    """The manifest as the user declared it: no status, no server metadata, no last-applied itself."""
    data = manifest.to_dict(obj)
    data.pop("status", None)
    meta = data.get("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations", {})
    annotations.pop(ANNOTATION_LAST_APPLIED, None)
    if not annotations:
        meta.pop("annotations", None)
    return data


def last_applied(live: Message) -> dict[str, Any]:
    """The previous manifest from the annotation; {} when absent or unreadable."""
    text = live.metadata.annotations.get(ANNOTATION_LAST_APPLIED, "")  # type: ignore[attr-defined]
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def merge(live: Any, last: Any, new: Any) -> Any:
    """Three-way merge of JSON values: new over live, removing what only `last` declared."""
    if isinstance(new, dict) and isinstance(live, dict):
        last = last if isinstance(last, dict) else {}
        out = {k: v for k, v in live.items() if not (k in last and k not in new)}
        for key, value in new.items():
            out[key] = merge(live.get(key), last.get(key), value)
        return out
    if isinstance(new, list) and isinstance(live, list):
        return _merge_list(live, last if isinstance(last, list) else [], new)
    return new


def _merge_list(live: list[Any], last: list[Any], new: list[Any]) -> list[Any]:
    """Items of `new` in its order, each merged with the live (and last) item of the same key."""
    if not all(isinstance(x, dict) for x in (*live, *new)):
        return new
    key = next((k for k in MERGE_KEYS if all(k in x for x in (*live, *new))), None)
    if key is None:
        if len(live) != len(new):
            return new
        last_items = last if len(last) == len(new) else [{}] * len(new)
        return [merge(lv, ls, nw) for lv, ls, nw in zip(live, last_items, new, strict=True)]
    live_by = {x[key]: x for x in live}
    last_by = {x.get(key): x for x in last if isinstance(x, dict)}
    return [merge(live_by.get(x[key], {}), last_by.get(x[key], {}), x) for x in new]


def desired_state(live: Message, declared: dict[str, Any]) -> Message:
    """The object apply would store: live merged with the manifest, annotation updated."""
    live_data = manifest.to_dict(live)
    merged = merge(live_data, last_applied(live), declared)
    merged.pop("status", None)
    if "status" in live_data:  # status belongs to the controllers; an update leaves it alone anyway
        merged["status"] = live_data["status"]
    merged.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_LAST_APPLIED] = _serialise(declared)
    return manifest.from_dict(merged)


def _serialise(declared: dict[str, Any]) -> str:
    return json.dumps(declared, sort_keys=True, separators=(",", ":")) + "\n"


def with_last_applied(doc: Document) -> Message:
    """The manifest's object for a first create, carrying the last-applied annotation."""
    obj = type(doc.obj)()
    obj.CopyFrom(doc.obj)
    obj.metadata.annotations[ANNOTATION_LAST_APPLIED] = _serialise(applied_configuration(doc.obj))  # type: ignore[attr-defined]
    return obj


# ---------------------------------------------------------------- plans


@dataclass
class Plan:
    """What one document will do: create it, update the live object, or nothing."""

    doc: Document
    action: str  # create, update, unchanged
    obj: Message  # what to send (the desired object)


async def plan_apply(client: Client, doc: Document) -> Plan:
    try:
        live = await client.get(type(doc.obj), doc.name, doc.namespace)
    except NotFound:
        return Plan(doc, "create", with_last_applied(doc))
    desired = desired_state(live, applied_configuration(doc.obj))
    return Plan(doc, "unchanged" if desired == live else "update", desired)


async def dry_run(client: Client, plans: list[Plan], echo_err: Echo) -> bool:
    """Let the server validate every write first; False (after reporting) if any is invalid.

    Only validation failures stop the command: a dry run may also fail because
    an earlier document creates the namespace a later one needs.
    """
    ok = True
    for p in plans:
        try:
            if p.action == "create":
                await client.create(p.obj, dry_run=True)
            elif p.action == "update":
                await client.update(p.obj, dry_run=True)
        except BadRequest as exc:
            echo_err(message(exc, f"error when {_doing(p.action)} {p.doc.where}"))
            ok = False
        except ApiError:
            continue  # not a validation failure (AlreadyExists, a namespace created earlier in the file...):
            # the real write reports it, after the documents before it are in
    return ok


def _doing(action: str) -> str:
    return "creating" if action == "create" else "applying patch to"


# ---------------------------------------------------------------- the commands


async def apply(client: Client, docs: list[Document], echo: Echo, echo_err: Echo) -> bool:
    """`kctl apply -f`: True when every document was applied."""
    plans = [await plan_apply(client, d) for d in docs]
    if not await dry_run(client, plans, echo_err):
        return False
    ok = True

    async def write(p: Plan) -> str:
        if p.action == "create":
            await client.create(p.obj)
            return "created"
        if p.action == "update":
            await client.update(p.obj)
            return "configured"
        return "unchanged"

    async def replan(p: Plan) -> Plan:
        # Someone wrote between our read and our write: merge again onto their version.
        return await plan_apply(client, p.doc)

    for p in plans:
        try:
            done = await retry_write(write, p, refresh=replan)
        except ApiError as exc:  # reported per document; the others still go ahead, as in kubectl
            echo_err(message(exc, f"error when {_doing(p.action)} {p.doc.where}"))
            ok = False
            continue
        echo(f"{resources.object_ref(p.doc.kind, p.doc.name)} {done}")
    return ok


async def create(client: Client, docs: list[Document], echo: Echo, echo_err: Echo) -> bool:
    """`kctl create -f`: an object that already exists is an error, the others are created."""
    plans = [Plan(d, "create", d.obj) for d in docs]
    if not await dry_run(client, plans, echo_err):
        return False
    ok = True
    for p in plans:
        try:
            created = await client.create(p.obj)
            echo(f"{resources.ref_of(created)} created")
        except ApiError as exc:  # reported per document; the others still go ahead, as in kubectl
            echo_err(message(exc, f"error when creating {p.doc.where}"))
            ok = False
    return ok
