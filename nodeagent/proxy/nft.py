"""Talking to the kernel: hand nftables a transaction, or remove the proxy's table.

Each call is one `nft -f -` run, which nft commits as one netlink batch: the
kernel applies all of it or none of it, so packets never see half a sync.
`netns` runs nft inside a named network namespace (tests and the benchmark).
"""

from __future__ import annotations

import asyncio
import subprocess

from nodeagent.proxy.rules import FAMILY, TABLE


class NftError(Exception):
    """nft refused a transaction; nothing of it was applied."""


def _command(netns: str | None) -> list[str]:
    return (["ip", "netns", "exec", netns] if netns else []) + ["nft", "-f", "-"]


async def apply(transaction: str, *, netns: str | None = None) -> None:
    """Commit `transaction` (nft script text) atomically."""
    if not transaction:
        return
    proc = await asyncio.create_subprocess_exec(
        *_command(netns), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await proc.communicate(transaction.encode())
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip()[:4000])


def apply_sync(transaction: str, *, netns: str | None = None) -> None:
    """`apply` for callers outside an event loop (`--cleanup`, the benchmark)."""
    if not transaction:
        return
    done = subprocess.run(_command(netns), input=transaction.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        raise NftError(done.stderr.decode(errors="replace").strip()[:4000])


def cleanup_transaction(table: str = TABLE) -> str:
    # "add" first makes the delete succeed whether or not the table exists.
    return f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


async def list_chains(*, netns: str | None = None, table: str = TABLE) -> list[str]:
    """The chains the proxy's table holds now ([] when there is no table)."""
    command = (["ip", "netns", "exec", netns] if netns else []) + ["nft", "list", "chains", FAMILY, table]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return []  # no table yet
    # Lines read "\tchain NAME {"; names never hold spaces.
    return [line.split()[1] for line in out.decode().splitlines() if line.strip().startswith("chain ")]
