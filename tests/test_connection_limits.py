"""Connection exhaustion: thousands of idle connections do not lock clients out of the apiserver or DNS.

Given etcd, an apiserver serving its TLS ports (HTTPS and gRPC) and the
cluster DNS, as separate processes on loopback, and 5,000 idle TCP
connections held to those three ports from many source addresses
(bench/connections.py holds 25,000 the same way): `get nodes` and a DNS query
over UDP and TCP still answer within 2 s, the servers close the idle
connections themselves (TLS handshake deadline, DNS TCP idle timeout), and
the daemons' logs hold no traceback. Then the per-source cap: one address
cannot hold more than its share of DNS TCP connections, and an idle DNS TCP
connection is closed, in-process.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import connections
from controlplane.connlimits import SourceLimit


@pytest.fixture(scope="module")
def targets() -> Iterator[connections.Targets]:
    with tempfile.TemporaryDirectory(prefix="flt-conn-") as tmp, connections.control_plane(Path(tmp)) as made:
        yield made


def test_5000_idle_connections_leave_the_apiserver_and_dns_answering(targets: connections.Targets) -> None:
    result = connections.probe(targets, 5_000)
    assert result.held >= 4_900, result.lines()
    assert result.get_nodes < 2.0 and result.dns_udp < 2.0 and result.dns_tcp < 2.0, result.lines()
    # The servers held the flood, then closed it themselves (handshake deadline, DNS idle timeout).
    assert result.descriptors_held > result.descriptors_before + 3_000, result.lines()
    assert result.descriptors_after < result.descriptors_before + 50, result.lines()
    assert result.tracebacks == 0, result.lines()


def test_the_per_source_cap_counts_and_releases() -> None:
    limit = SourceLimit(2, what="test connections")
    assert limit.admit("10.0.0.1") and limit.admit("10.0.0.1")
    assert not limit.admit("10.0.0.1") and limit.admit("10.0.0.2")
    limit.release("10.0.0.1")
    assert limit.admit("10.0.0.1") and limit.refused == 1


async def test_one_source_cannot_hoard_dns_tcp_and_silence_is_cut(targets: connections.Targets) -> None:
    from controlplane.dns import server as dns

    capped = dns.TCP_PER_SOURCE
    opened = []
    for _ in range(capped + 20):
        opened.append(await asyncio.open_connection(*targets.dns, local_addr=("127.0.0.77", 0)))
    await asyncio.sleep(0.5)
    ends = await asyncio.gather(*(asyncio.wait_for(reader.read(1), 0.5) for reader, _ in opened),
                                return_exceptions=True)
    closed = sum(1 for end in ends if end == b"")
    assert closed == 20  # beyond the cap, closed as they arrived; the first `capped` stay until idle
    await asyncio.sleep(dns.TCP_IDLE_TIMEOUT + 1)
    ends = [await asyncio.wait_for(reader.read(1), 1) for reader, _ in opened[:capped]]
    assert ends == [b""] * capped
    for _, writer in opened:
        writer.close()


def test_a_daemon_log_is_rotated_in_place_and_the_daemon_writes_on(tmp_path: Path) -> None:
    from provision.supervisor import rotate

    log = tmp_path / "dns.log"
    with open(log, "ab") as daemon:  # as the supervisor hands it to a daemon: O_APPEND
        daemon.write(b"x" * 2048)
        daemon.flush()
        assert not rotate(log, max_bytes=4096)
        daemon.write(b"y" * 4096)
        daemon.flush()
        assert rotate(log, max_bytes=4096, backups=2)
        daemon.write(b"after\n")
        daemon.flush()
        assert log.read_bytes() == b"after\n"  # at the new end, not at the old offset
        (tmp_path / "dns.log.1").write_bytes(b"old")
        daemon.write(b"z" * 5000)
        daemon.flush()
        assert rotate(log, max_bytes=4096, backups=2)
    assert (tmp_path / "dns.log.2").read_bytes() == b"old" and log.stat().st_size == 0
    assert (tmp_path / "dns.log.1").read_bytes().startswith(b"after\n")
