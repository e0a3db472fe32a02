"""etcd's membership, as `etcdctl member list|add|remove` sees it: for `kctl etcd member` and add/remove-master.

A cluster with several masters runs one etcd member per master (kubeadm's
stacked etcd). The operator asks any member that answers (the first of the
given endpoints that does): the member list is the Raft cluster's
configuration, the same from every member. A member is *started* once it has
joined and published its name; one added but not yet running shows with an
empty name ("unstarted"), as etcdctl prints it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from aetcd.rpc import rpc_pb2 as rpc

from controlplane.apiserver.storage import EtcdClientTLS, etcd_client

CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def status(self) -> str:
        return "started" if self.name else "unstarted"


RECONFIG_WAIT = 20.0  # seconds a member change waits for a cluster etcd calls unhealthy


class EtcdUnreachable(RuntimeError):
    """No endpoint answered (every member down, or no quorum for a call that needs one)."""


async def _ask(endpoints: Sequence[str], tls: EtcdClientTLS | None, call: str, request: object) -> object:
    """`call` on the cluster service of the first endpoint that answers it."""
    errors = []
    for url in endpoints:
        try:
            async with etcd_client(url, tls, timeout=int(CALL_TIMEOUT)) as etcd:
                return await asyncio.wait_for(getattr(etcd.clusterstub, call)(request, timeout=CALL_TIMEOUT),
                                              CALL_TIMEOUT + 1)
        except (grpc.RpcError, TimeoutError, OSError) as err:
            details = err.details() if isinstance(err, grpc.RpcError) else (str(err) or type(err).__name__)
            errors.append(f"{url}: {details}")
    raise EtcdUnreachable("no etcd member answered: " + "; ".join(errors))


def _member(m: object) -> Member:
    return Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), bool(m.isLearner))  # type: ignore[attr-defined]


async def members(endpoints: Sequence[str], tls: EtcdClientTLS | None) -> list[Member]:
    reply = await _ask(endpoints, tls, "MemberList", rpc.MemberListRequest())
    return [_member(m) for m in reply.members]  # type: ignore[attr-defined]


async def healthy(url: str, tls: EtcdClientTLS | None) -> bool:
    """`etcdctl endpoint health`: the member at `url` serves a linearizable read (it has a leader, in quorum)."""
    try:
        async with etcd_client(url, tls, timeout=int(CALL_TIMEOUT)) as etcd:
            await asyncio.wait_for(etcd.kvstub.Range(rpc.RangeRequest(key=b"health"), timeout=CALL_TIMEOUT),
                                   CALL_TIMEOUT + 1)
            return True
    except (grpc.RpcError, TimeoutError, OSError):
        return False


async def add(endpoints: Sequence[str], tls: EtcdClientTLS | None, peer_url: str) -> Member:
    """`etcdctl member add`: the cluster expects a member at `peer_url` (it starts with --initial-cluster-state
    existing). Needs a quorum."""
    # etcd refuses a member change until every started member has been connected for a few seconds
    # (--strict-reconfig-check: "unhealthy cluster"), as just after a removal: that answer is retried.
    deadline = asyncio.get_running_loop().time() + RECONFIG_WAIT
    while True:
        try:
            reply = await _ask(endpoints, tls, "MemberAdd", rpc.MemberAddRequest(peerURLs=[peer_url]))
            return _member(reply.member)  # type: ignore[attr-defined]
        except EtcdUnreachable as err:
            if "unhealthy cluster" not in str(err) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.5)


async def remove(endpoints: Sequence[str], tls: EtcdClientTLS | None, member_id: int) -> None:
    """`etcdctl member remove`. Needs a quorum."""
    await _ask(endpoints, tls, "MemberRemove", rpc.MemberRemoveRequest(ID=member_id))
