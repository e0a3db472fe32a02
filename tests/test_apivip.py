"""The API VIP announcer's last resort must never take the address from the elected holder.

nodeagent/apivip/main.py: a master that is not leading holds the VIP as the last
resort while only its own apiserver answers, and lets go once a peer answers
again. If the election makes it the leader while that probe is in flight, the
address is the election's: letting go then left the Lease's holder without the
VIP, and no other master may take it while that holder renews (found by the HA
suite: a new master could not reach the API for minutes). Run in a network
namespace of the test's own with a veth pair; the apiservers' answers are
scripted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from nodeagent.apivip import main as apivip
from nodeagent.l2announce import L2Speaker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")

VIP = "10.250.7.254"


@pytest.fixture
def speaker() -> Iterator[L2Speaker]:
    netns = f"flt-vip-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # A veth pair inside the namespace (this kernel has no dummy links): vip0 plays the node's eth0.
        for args in (["link", "add", "vip0", "type", "veth", "peer", "name", "vip1"],
                     ["addr", "add", "10.250.7.11/24", "dev", "vip0"], ["link", "set", "vip0", "up"],
                     ["link", "set", "vip1", "up"]):
            subprocess.run(["ip", "-n", netns, *args], check=True)
        yield L2Speaker("vip0", netns=netns)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_an_election_won_during_the_probe_keeps_the_vip(speaker: L2Speaker,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    opts = argparse.Namespace(node_name="m1", node_ip="127.0.0.1", peer=["127.0.0.2"], vip=VIP, retry_period=0.05)
    leading = asyncio.Event()
    rounds: list[str] = []

    async def answers(address: str, port: int, timeout: float) -> bool:
        if address == opts.node_ip:
            return True  # our own apiserver always answers
        if len(rounds) < 2:  # the peers are silent at first: the last resort takes the VIP
            rounds.append("silent")
            return False
        if not leading.is_set():  # now the election is won while this probe is in flight...
            leading.set()
            speaker.hold(VIP)  # ...and the elected holder announces the VIP (apivip.run's announce)
        rounds.append("answers")
        return True  # ...and a peer answers again

    monkeypatch.setattr(apivip, "answers", answers)

    async def scenario() -> None:
        task = asyncio.create_task(apivip.hold_as_last_resort(opts, speaker, leading, "127.0.0.1:6445"))
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if "answers" in rounds:
                    break
            assert "silent" in rounds and "answers" in rounds, rounds
            await asyncio.sleep(0.3)  # a few more rounds of the loop
        finally:
            task.cancel()
        assert speaker.holds(VIP), "the last resort withdrew the VIP the elected holder announced"

    asyncio.run(scenario())
