"""Fixtures: a real etcd and a real apiserver process for the whole test session.

Nothing is faked: tests talk gRPC to the apiserver, which talks to etcd; the
same apiserver also serves the Kubernetes HTTP API on a loopback port
(`http_url`), for kubectl and the Python client. Each test that writes gets its
own namespace, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client import Client
from proto import core_pb2
from provision.processes import ApiServer, Etcd, free_port, start_apiserver, start_etcd

# The test suite is always offline: every cluster a test makes (in this process or through `kctl cluster up`
# in a child, which inherits it) pulls images only from its own registry, never from a public one
# (provision/provider.py reads it; tests/test_offline.py holds it to that).
os.environ["FLOTILLA_OFFLINE"] = "1"

@pytest.fixture(scope="session", autouse=True)
def private_kctl_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads or writes the user's own kctl config (~/.kctl/config).

    A cluster someone brought up on this machine must not lend its credentials
    to a test's kctl, and a test's `cluster up` must not replace the user's.
    """
    previous = os.environ.get("KCTL_CONFIG")
    os.environ["KCTL_CONFIG"] = str(tmp_path_factory.mktemp("kctl") / "config")
    yield
    if previous is None:
        os.environ.pop("KCTL_CONFIG", None)
    else:
        os.environ["KCTL_CONFIG"] = previous


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    base: Path = tmp_path_factory.mktemp("etcd")
    server = start_etcd(base / "data", log_dir=base)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def own_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """An etcd for one module's apiservers that run as a cluster's do — with encryption at rest under a key of
    their own: Secrets they seal would be unreadable to every other apiserver sharing the session's etcd."""
    base: Path = tmp_path_factory.mktemp("own-etcd")
    server = start_etcd(base / "data", log_dir=base)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def http_port() -> int:
    """The apiserver's plaintext Kubernetes HTTP API port (`--http-listen`)."""
    return free_port()


@pytest.fixture(scope="session")
def apiserver(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory, http_port: int) -> Iterator[ApiServer]:
    server = start_apiserver(etcd.url, tmp_path_factory.mktemp("apiserver"),
                             extra=["--http-listen", f"127.0.0.1:{http_port}"])
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def http_url(apiserver: ApiServer, http_port: int) -> str:
    """The same apiserver's Kubernetes HTTP API, as kubectl and the Python client reach it."""
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture
async def client(apiserver: ApiServer) -> AsyncIterator[Client]:
    async with Client(apiserver.address) as c:
        yield c


@pytest.fixture
async def namespace(client: Client) -> str:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    await client.create(ns)
    return name
