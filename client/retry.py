"""Retry on conflict: client-go's `retry.RetryOnConflict`, written once for every writer.

Every write names the resourceVersion it read; if someone wrote in between,
the apiserver answers Conflict and the writer must read again, re-apply its
change to the fresh copy and write again. Controllers leave that to their work
queue (the key is re-queued); one-shot writers — kctl verbs, the kubelet's
status reports, hollow nodes — use the helpers here instead of their own loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from proto.errors import Conflict

if TYPE_CHECKING:
    from client.api import Client

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# client-go's DefaultRetry: 5 steps, 10 ms apart with jitter-free growth.
DEFAULT_ATTEMPTS = 5
DEFAULT_DELAY = 0.01


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], *, attempts: int = DEFAULT_ATTEMPTS,
                            delay: float = DEFAULT_DELAY) -> T:
    """Await `attempt()` until it does not raise Conflict; the last Conflict propagates after `attempts` tries.

    `attempt` must read what it changes afresh each time: retrying a write of
    the same stale object can only conflict again.
    """
    for n in range(attempts):
        try:
            return await attempt()
        except Conflict:
            if n + 1 == attempts:
                raise
            await asyncio.sleep(delay * (2**n))
    raise AssertionError("unreachable: attempts must be >= 1")


async def update_fresh(client: Client, cls: type[M], name: str, namespace: str, change: Callable[[M], object], *,
                       status: bool = False, attempts: int = DEFAULT_ATTEMPTS) -> M | None:
    """Read the freshest `cls` `namespace/name`, apply `change` to it and write it; again on Conflict.

    `change` edits the object in place and returns False when there is nothing
    to write (then nothing is written and None is returned); anything else
    (None included) means "write it". `status=True` writes the status
    subresource. Returns what the apiserver stored.
    """

    async def attempt() -> M | None:
        obj = await client.get(cls, name, namespace)
        if change(obj) is False:
            return None
        return await (client.update_status(obj) if status else client.update(obj))

    return await retry_on_conflict(attempt, attempts=attempts)
