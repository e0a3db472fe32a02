"""Encryption at rest: a Secret's values never reach etcd's files, and key rotation re-seals them.

Given an etcd of its own and an apiserver with `--encryption-provider-config`
(Kubernetes' EncryptionConfiguration, aescbc then identity, as `cluster up`
writes it): a Secret written through the API -- its data, and kubectl's
last-applied annotation which repeats that data -- appears nowhere in etcd's
WAL or db, reads back intact through get, list and watch, and is stored with
Kubernetes' `k8s:enc:aescbc:v1:<key>:` prefix. Putting a new key first and
restarting re-seals every Secret with it (old key dropped afterwards, all still
read); a value whose key is gone is a clear 500 naming the key, not garbage.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aetcd import rpc

from client import Client
from controlplane.apiserver import encryption
from controlplane.apiserver.storage import Storage
from proto import core_pb2
from proto.errors import ApiError
from provision.processes import ApiServer, Etcd, start_apiserver, start_etcd

VALUE = b"hunter2-correct-horse-battery-staple"
ANNOTATION_VALUE = "last-applied-carries-the-data-too"
KEY = b"/registry/secrets/vault/db"


def _config(*keys: tuple[str, bytes], identity: bool = True) -> str:
    providers: list[dict[str, object]] = [{"aescbc": {"keys": [
        {"name": name, "secret": base64.b64encode(secret).decode()} for name, secret in keys]}}]
    if identity:
        providers.append({"identity": {}})
    return yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                           "resources": [{"resources": ["secrets"], "providers": providers}]})


class Sealed:
    """An etcd and an apiserver whose encryption config the test rewrites and restarts it with."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.config = base / "encryption-config.yaml"
        self.etcd: Etcd = start_etcd(base / "etcd", log_dir=base)
        self.apiserver: ApiServer | None = None

    def start(self, config_text: str) -> None:
        if self.apiserver is not None:
            self.apiserver.process.stop()
        self.config.write_text(config_text)
        self.apiserver = start_apiserver(self.etcd.url, self.base, extra=[
            "--log-level", "WARNING", "--encryption-provider-config", str(self.config)])

    @property
    def address(self) -> str:
        assert self.apiserver is not None
        return self.apiserver.address

    def raw(self) -> bytes:
        """What etcd stores under the Secret's key, read past the apiserver."""
        async def read() -> bytes:
            storage = Storage(self.etcd.url)
            await storage.connect()
            try:
                reply = await storage._etcd.kvstub.Range(rpc.RangeRequest(key=KEY))
                return bytes(reply.kvs[0].value)
            finally:
                await storage.close()
        return asyncio.run(read())

    def files_hold(self, needle: bytes) -> list[str]:
        return [str(p) for p in (self.base / "etcd").rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sealed]:
    made = Sealed(tmp_path_factory.mktemp("sealed"))
    made.start(_config(("key1", os.urandom(32))))
    yield made
    if made.apiserver is not None:
        made.apiserver.process.stop()
    made.etcd.process.stop()


async def _write_secret(address: str) -> str:
    """Create the Secret, then change its value; the creation's resourceVersion."""
    async with Client(address) as client:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = "vault"
        await client.create(ns)
        secret = core_pb2.Secret(api_version="v1", kind="Secret")
        secret.metadata.name, secret.metadata.namespace = "db", "vault"
        secret.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"] = ANNOTATION_VALUE
        secret.data["password"] = VALUE
        created = await client.create(secret)
        version = created.metadata.resource_version
        created.data["password"] = VALUE + b"-v2"
        await client.update(created)
        return version


async def _watched_change(address: str, version: str) -> tuple[str, bytes]:
    """The first change after `version`, through etcd's watch (not a list)."""
    async with Client(address) as client:
        async for event in client.watch(core_pb2.Secret, "vault", resource_version=version):
            assert event.object is not None
            return event.type, bytes(event.object.data["password"])
    raise AssertionError("the watch ended")


async def _read_everywhere(address: str) -> tuple[bytes, bytes, bytes]:
    async with Client(address) as client:
        got = await client.get(core_pb2.Secret, "db", "vault")
        listed = (await client.list(core_pb2.Secret, "vault")).items
        async for event in client.watch(core_pb2.Secret, "vault", resource_version="0"):
            watched = event.object
            break
        assert watched is not None
        return bytes(got.data["password"]), bytes(listed[0].data["password"]), bytes(watched.data["password"])


def test_secret_values_appear_nowhere_in_etcds_files_and_read_back_intact(sealed: Sealed) -> None:
    created = asyncio.run(_write_secret(sealed.address))
    assert asyncio.run(_read_everywhere(sealed.address)) == (VALUE + b"-v2",) * 3
    assert asyncio.run(_watched_change(sealed.address, created)) == ("MODIFIED", VALUE + b"-v2")
    assert sealed.raw().startswith(b"k8s:enc:aescbc:v1:key1:")
    # Both versions were written (WAL) and the db holds the latest: none in plaintext, annotation neither.
    assert sealed.files_hold(VALUE) == []
    assert sealed.files_hold(ANNOTATION_VALUE.encode()) == []
    assert sealed.files_hold(b"vault") != []  # the check can fail: keys are not encrypted, and are found


async def _cache_listing(sealed: Sealed, config_text: str) -> list[bytes]:
    storage = Storage(sealed.etcd.url, encryption=encryption.parse_config(yaml.safe_load(config_text)))
    await storage.connect()
    try:
        with pytest.raises(ApiError):
            await storage.range(b"/registry/secrets/", b"/registry/secrets0")
        page = await storage.range(b"/registry/secrets/", b"/registry/secrets0", skip_unreadable=True)
        return [item.key for item in page.items]
    finally:
        await storage.close()


def test_rotation_reseals_with_the_new_key_and_the_old_key_can_go(sealed: Sealed) -> None:
    old, new = ("key1", _keys(sealed)["key1"]), ("key2", os.urandom(32))
    sealed.start(_config(new, old))  # 1. the new key first, the old still listed: the restart re-seals
    assert sealed.raw().startswith(b"k8s:enc:aescbc:v1:key2:")
    sealed.start(_config(new))  # 2. the old key dropped: everything still reads
    assert asyncio.run(_read_everywhere(sealed.address))[0] == VALUE + b"-v2"

    sealed.start(_config(("key3", os.urandom(32))))  # 3. key2 lost: a clear error naming it, never garbage
    with pytest.raises(ApiError, match='unable to transform key "/registry/secrets/vault/db": it was sealed by '
                                       "the aescbc key 'key2', which --encryption-provider-config does not list"):
        asyncio.run(_read_everywhere(sealed.address))
    wrong = ("key2", os.urandom(32))  # the same name with other bytes: CBC's padding check tells
    sealed.start(_config(wrong))
    with pytest.raises(ApiError, match="aescbc key 'key2' does not open this value"):
        asyncio.run(_read_everywhere(sealed.address))
    # The apiserver's own caches (bootstrap tokens, policy) leave such a value out instead of never filling.
    assert asyncio.run(_cache_listing(sealed, _config(wrong))) == []
    sealed.start(_config(new))  # the right key back: all is well again
    assert asyncio.run(_read_everywhere(sealed.address))[1] == VALUE + b"-v2"


def _keys(sealed: Sealed) -> dict[str, bytes]:
    doc = yaml.safe_load(sealed.config.read_text())
    return {k["name"]: base64.b64decode(k["secret"]) for p in doc["resources"][0]["providers"]
            for k in p.get("aescbc", {}).get("keys", [])}


@pytest.mark.parametrize(("document", "message"), [
    ({"kind": "EncryptionConfiguration", "apiVersion": "v1"}, "kind must be EncryptionConfiguration"),
    ({"kind": "EncryptionConfiguration", "apiVersion": encryption.API_VERSION, "resources": [
        {"resources": ["secrets"], "providers": [{"aescbc": {"keys": [{"name": "k", "secret": "c2hvcnQ="}]}}]}]},
     r"resources\[0\].providers\[0\].aescbc.keys\[0\].secret: 5 bytes; aescbc takes 16 or 24 or 32"),
    ({"kind": "EncryptionConfiguration", "apiVersion": encryption.API_VERSION, "resources": [
        {"resources": ["secrets"], "providers": [{"kms": {}}]}]}, "the kms provider is not supported"),
    ({"kind": "EncryptionConfiguration", "apiVersion": encryption.API_VERSION, "resources": [
        {"resources": ["nothings"], "providers": [{"identity": {}}]}]}, "'nothings' is not a resource"),
])
def test_a_bad_config_is_refused_naming_the_place(document: dict[str, object], message: str) -> None:
    with pytest.raises(encryption.ConfigError, match=message):
        encryption.parse_config(document)


def test_secretbox_and_the_fresh_config_cluster_up_writes_round_trip() -> None:
    fresh = encryption.parse_config(yaml.safe_load(encryption.new_config()))
    sealed = fresh.seal(KEY, b"plain")
    assert sealed.startswith(b"k8s:enc:aescbc:v1:key1:") and fresh.open(KEY, sealed) == b"plain"
    assert fresh.open(KEY, b"from-before-encryption") == b"from-before-encryption"  # identity reads it
    assert fresh.is_stale(KEY, b"from-before-encryption") and not fresh.is_stale(KEY, sealed)
    assert fresh.seal(b"/registry/configmaps/a/b", b"plain") == b"plain"  # only what is listed
    box = encryption.parse_config({"kind": "EncryptionConfiguration", "apiVersion": encryption.API_VERSION,
                                   "resources": [{"resources": ["secrets"], "providers": [{"secretbox": {"keys": [
                                       {"name": "b", "secret": base64.b64encode(os.urandom(32)).decode()}]}}]}]})
    sealed = box.seal(KEY, b"plain")
    assert sealed.startswith(b"k8s:enc:secretbox:v1:b:") and box.open(KEY, sealed) == b"plain"
    with pytest.raises(ApiError, match="stored in plaintext and no identity provider"):
        box.open(KEY, b"plain")
