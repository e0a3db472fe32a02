"""Retry on conflict: client-go's `retry.RetryOnConflict`, written once for every writer.

Every write names the resourceVersion it read; if someone wrote in between,
the apiserver answers Conflict and the writer must read again, re-apply its
change to the fresh copy and write again. Controllers leave that to their work
queue (the key is re-queued); one-shot writers — kctl verbs, the kubelet's
status reports, hollow nodes — use the helpers here instead of their own loops:

- `update_fresh`: read the object, change it, write it (kctl label, cordon, scale);
- `retry_write`: write something already worked out from a read, and on Conflict
  work it out again (kctl apply re-plans its three-way merge onto the new live
  object);
- `retry_on_conflict`: any other read-and-write, as one callable.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from proto.errors import Conflict

if TYPE_CHECKING:
    from client.api import Client

T = TypeVar("T")
S = TypeVar("S")
M = TypeVar("M", bound=Message)

# client-go's DefaultRetry: 5 steps, 10 ms apart, each pause up to 10% longer at random, so two
# writers that conflicted once do not collide again in lockstep.
DEFAULT_ATTEMPTS = 5
DEFAULT_DELAY = 0.01
JITTER = 0.1


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
            # Not growing: a conflict means someone else wrote, not that the apiserver is overloaded.
            await asyncio.sleep(delay * (1 + random.uniform(0, JITTER)))
    raise AssertionError("unreachable: attempts must be >= 1")


async def retry_write(write: Callable[[S], Awaitable[T]], planned: S, *, refresh: Callable[[S], Awaitable[S]],
                      attempts: int = DEFAULT_ATTEMPTS, delay: float = DEFAULT_DELAY) -> T:
    """`write(planned)`; after each Conflict, `write(await refresh(last))`; the last Conflict propagates.

    For a writer that has already read and worked out what to write before it
    writes (kctl apply plans every document, then dry-runs them all): the first
    attempt spends no extra read, and `refresh` reads again and re-plans only
    when someone wrote in between.
    """
    written: list[S] = []  # the plans tried so far: the next attempt refreshes the last

    async def attempt() -> T:
        plan = await refresh(written[-1]) if written else planned
        written.append(plan)
        return await write(plan)

    return await retry_on_conflict(attempt, attempts=attempts, delay=delay)


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
