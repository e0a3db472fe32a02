"""Encryption at rest: Kubernetes' EncryptionConfiguration, applied to what the apiserver stores in etcd.

    flotilla-apiserver --encryption-provider-config /etc/flotilla/pki/encryption-config.yaml ...

    apiVersion: apiserver.config.k8s.io/v1
    kind: EncryptionConfiguration
    resources:
      - resources: [secrets]
        providers:
          - aescbc: {keys: [{name: key2, secret: <base64 of 32 random bytes>}]}   # writes
          - aescbc: {keys: [{name: key1, secret: <base64>}]}                      # still reads
          - identity: {}                                                          # reads plaintext

Etcd's files (its WAL and its bbolt db) and its snapshots hold every value
ever written, so a Secret stored as it is can be read by anyone who gets a
copy of them. With this configuration the storage layer (storage.py) seals the
whole stored object of the listed resources -- data, annotations (kubectl's
last-applied annotation repeats a Secret's data), everything -- on the way to
etcd, and opens it on the way back, for gets, lists and watches alike; the
registry above never sees ciphertext.

The format is Kubernetes' own, so the providers mean what they mean there:
each stored value starts with `k8s:enc:<provider>:v1:<key name>:`, then
- `aescbc`: a random 16-byte IV and AES-CBC with PKCS#7 padding (16-, 24- or
  32-byte keys; the `cryptography` library);
- `secretbox`: a random 24-byte nonce and XSalsa20-Poly1305 (32-byte keys;
  PyNaCl, which Flotilla has through Fabric's SSH library);
- `identity`: no prefix, the value as it is.
The first provider's first key encrypts every write; every listed key decrypts,
found by the name in the prefix, and `identity` reads values stored before
encryption was on. That is what makes rotation work (docs/security.md): put a
new key first, restart, let the apiserver rewrite what an older key sealed
(`rewrite_stale`, at every start), then drop the old key.

A value no configured key can open is an error that names the key and why
(`unable to transform key "/registry/secrets/default/db": no key named "key1"
among the configured aescbc keys`), never garbage handed to the decoder.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from proto import kinds
from proto.errors import ApiError

log = logging.getLogger(__name__)

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
ENCRYPTED = b"k8s:enc:"  # what every sealed value starts with, whatever the provider
REGISTRY = b"/registry/"


class ConfigError(ValueError):
    """The EncryptionConfiguration file is unreadable or says something this apiserver cannot do."""


class TransformError(ApiError):
    """A stored value that no configured provider can open (a 500, as Kubernetes answers it)."""


class Provider(Protocol):
    """One key of one provider: seals with its prefix, opens what carries it."""

    @property
    def prefix(self) -> bytes: ...

    def seal(self, plain: bytes) -> bytes: ...

    def open(self, sealed: bytes) -> bytes: ...


@dataclass(frozen=True)
class Identity:
    """Plaintext: what values written before encryption was configured look like."""

    prefix: bytes = b""

    def seal(self, plain: bytes) -> bytes:
        return plain

    def open(self, sealed: bytes) -> bytes:
        return sealed


class AESCBC:
    """Kubernetes' aescbc: IV, then AES-CBC with PKCS#7 padding."""

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        self.prefix = f"k8s:enc:aescbc:v1:{name}:".encode()
        self._algorithm = algorithms.AES(key)

    def seal(self, plain: bytes) -> bytes:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return self.prefix + iv + encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()

    def open(self, sealed: bytes) -> bytes:
        body = sealed[len(self.prefix):]
        if len(body) < 32 or len(body) % 16:
            raise ValueError(f"the aescbc value sealed with key {self.name!r} is truncated")
        decryptor = Cipher(self._algorithm, modes.CBC(body[:16])).decryptor()
        padded = decryptor.update(body[16:]) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            # CBC carries no MAC: a key of the same name with other bytes shows up as bad padding.
            raise ValueError(f"aescbc key {self.name!r} does not open this value (the key's secret "
                             "differs from the one that sealed it)") from None


class Secretbox:
    """Kubernetes' secretbox: nonce, then NaCl's XSalsa20-Poly1305 box (authenticated)."""

    def __init__(self, name: str, key: bytes) -> None:
        try:
            from nacl import exceptions as nacl_errors  # type: ignore[import-not-found,unused-ignore]
            from nacl.secret import SecretBox  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError("the secretbox provider needs PyNaCl (pip install pynacl); aescbc needs nothing "
                              "more") from None
        self.name = name
        self.prefix = f"k8s:enc:secretbox:v1:{name}:".encode()
        self._box = SecretBox(key)
        self._failed = nacl_errors.CryptoError

    def seal(self, plain: bytes) -> bytes:
        return self.prefix + bytes(self._box.encrypt(plain))

    def open(self, sealed: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(sealed[len(self.prefix):]))
        except self._failed:
            raise ValueError(f"secretbox key {self.name!r} does not open this value (wrong key, or the "
                             "value was altered)") from None


# Each provider: its class and the key lengths it takes.
_PROVIDERS: Mapping[str, tuple[type[AESCBC] | type[Secretbox], tuple[int, ...]]] = {
    "aescbc": (AESCBC, (16, 24, 32)),
    "secretbox": (Secretbox, (32,)),
}
_UNSUPPORTED = ("aesgcm", "kms")


@dataclass(frozen=True)
class ResourceEncryption:
    """The providers for a set of resources, in order: the first seals, all open."""

    resources: frozenset[str]  # etcd key segments: "secrets", "configmaps"
    providers: tuple[Provider, ...]

    def seal(self, plain: bytes) -> bytes:
        return self.providers[0].seal(plain)

    def open(self, key: bytes, value: bytes) -> tuple[bytes, bool]:
        """(plaintext, stale): stale when a provider other than the writing one sealed it."""
        encrypted = value.startswith(ENCRYPTED)
        for index, provider in enumerate(self.providers):
            if (provider.prefix and value.startswith(provider.prefix)) or (not provider.prefix and not encrypted):
                try:
                    return provider.open(value), index > 0
                except ValueError as exc:
                    raise TransformError(f'Internal error occurred: unable to transform key "{key.decode()}": '
                                         f"{exc}") from None
        raise TransformError(f'Internal error occurred: unable to transform key "{key.decode()}": '
                             f"{_why_unopened(value)}")


def _why_unopened(value: bytes) -> str:
    if not value.startswith(ENCRYPTED):
        return "the value is stored in plaintext and no identity provider is configured to read it"
    parts = value.split(b":", 5)
    if len(parts) >= 5:
        provider, name = parts[2].decode(errors="replace"), parts[4].decode(errors="replace")
        return (f"it was sealed by the {provider} key {name!r}, which --encryption-provider-config does not "
                "list (no matching prefix found)")
    return "no matching prefix found"


@dataclass(frozen=True)
class EncryptionConfig:
    """What --encryption-provider-config says, indexed by the etcd key's resource segment."""

    rules: tuple[ResourceEncryption, ...]

    def for_key(self, key: bytes) -> ResourceEncryption | None:
        """The rule for an object's key (`/registry/<resource>/...`); None: stored as it is."""
        if not key.startswith(REGISTRY):
            return None
        resource = key[len(REGISTRY):].split(b"/", 1)[0].decode(errors="replace")
        for rule in self.rules:
            if resource in rule.resources:
                return rule
        return None

    def prefixes(self) -> list[bytes]:
        """The etcd prefixes whose values this configuration seals."""
        return sorted(REGISTRY + resource.encode() + b"/" for rule in self.rules for resource in rule.resources)

    def seal(self, key: bytes, plain: bytes) -> bytes:
        rule = self.for_key(key)
        return plain if rule is None else rule.seal(plain)

    def open(self, key: bytes, value: bytes) -> bytes:
        rule = self.for_key(key)
        if rule is None:
            if value.startswith(ENCRYPTED):
                # Encrypted once, configuration lost since: say so instead of decoding ciphertext.
                raise TransformError(f'Internal error occurred: unable to transform key "{key.decode()}": the value '
                                     "is encrypted but --encryption-provider-config covers no such resource")
            return value
        return rule.open(key, value)[0]

    def is_stale(self, key: bytes, value: bytes) -> bool:
        """True when a write now would seal `value` differently (an older key, or plaintext)."""
        rule = self.for_key(key)
        return rule is not None and rule.open(key, value)[1]


def _resource_segments(name: str) -> set[str]:
    """The etcd key segments a config's resource name covers (`secrets`, `deployments.apps`, `*.apps`, `*.*`)."""
    if name in ("*.*", "*."):
        group = None if name == "*.*" else ""
        return {k.resource for k in kinds.KINDS if group is None or k.group == group}
    if name.startswith("*."):
        group = name[2:]
        found = {k.resource for k in kinds.KINDS if k.group == group}
        if not found:
            raise ConfigError(f"resources: no API group {group!r} is served")
        return found
    resource, _, group = name.partition(".")
    for kind in kinds.KINDS:
        if kind.resource == resource and kind.group == group:
            return {kind.resource}
    raise ConfigError(f"resources: {name!r} is not a resource this apiserver stores (core resources are "
                      "plain, like secrets; others carry their group, like deployments.apps)")


def _provider(entry: Any, where: str) -> list[Provider]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"{where}: each provider is one of aescbc, secretbox, identity")
    (name, spec), = entry.items()
    if name == "identity":
        return [Identity()]
    if name in _UNSUPPORTED:
        raise ConfigError(f"{where}: the {name} provider is not supported here (use aescbc or secretbox)")
    if name not in _PROVIDERS:
        raise ConfigError(f"{where}: unknown provider {name!r} (aescbc, secretbox, identity)")
    cls, lengths = _PROVIDERS[name]
    keys = (spec or {}).get("keys") if isinstance(spec, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{where}.{name}.keys: at least one key is required")
    made: list[Provider] = []
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or not key.get("name") or not key.get("secret"):
            raise ConfigError(f"{where}.{name}.keys[{index}]: a key needs a name and a secret")
        if ":" in str(key["name"]):
            raise ConfigError(f"{where}.{name}.keys[{index}].name: may not contain ':'")
        try:
            secret = base64.b64decode(str(key["secret"]), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}.{name}.keys[{index}].secret: not valid base64") from None
        if len(secret) not in lengths:
            raise ConfigError(f"{where}.{name}.keys[{index}].secret: {len(secret)} bytes; {name} takes "
                              + " or ".join(str(n) for n in lengths))
        made.append(cls(str(key["name"]), secret))
    return made


def parse_config(document: Any) -> EncryptionConfig:
    """An EncryptionConfiguration (as parsed YAML), checked: every mistake is a ConfigError naming its place."""
    if not isinstance(document, dict):
        raise ConfigError("not an EncryptionConfiguration document")
    if document.get("kind") != KIND or document.get("apiVersion") not in (API_VERSION, "apiserver.config.k8s.io/v1"):
        raise ConfigError(f"kind must be {KIND} and apiVersion {API_VERSION}, got "
                          f"{document.get('kind')!r} {document.get('apiVersion')!r}")
    rules: list[ResourceEncryption] = []
    seen: set[str] = set()
    for index, rule in enumerate(document.get("resources") or []):
        where = f"resources[{index}]"
        if not isinstance(rule, dict) or not rule.get("resources") or not rule.get("providers"):
            raise ConfigError(f"{where}: needs resources and providers")
        segments: set[str] = set()
        for name in rule["resources"]:
            segments |= _resource_segments(str(name))
        segments -= seen  # as in Kubernetes, the first rule naming a resource is the one that applies
        seen |= segments
        providers = [p for i, entry in enumerate(rule["providers"])
                     for p in _provider(entry, f"{where}.providers[{i}]")]
        names = [p.prefix for p in providers]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: a key name appears twice within one provider")
        if segments:
            rules.append(ResourceEncryption(frozenset(segments), tuple(providers)))
    if not rules:
        raise ConfigError("resources: the configuration encrypts nothing")
    return EncryptionConfig(tuple(rules))


def load_config(path: Path) -> EncryptionConfig:
    """Read --encryption-provider-config; ConfigError says what is wrong with it."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {exc}") from None
    try:
        return parse_config(document)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def new_config(resources: Sequence[str] = ("secrets",), key_name: str = "key1") -> str:
    """A fresh EncryptionConfiguration: a random 32-byte aescbc key for `resources`, then identity
    (so values written before encryption was on still read, and are rewritten sealed at the next start)."""
    secret = base64.b64encode(os.urandom(32)).decode()
    return yaml.safe_dump({
        "apiVersion": API_VERSION, "kind": KIND,
        "resources": [{"resources": list(resources),
                       "providers": [{"aescbc": {"keys": [{"name": key_name, "secret": secret}]}},
                                     {"identity": {}}]}],
    }, sort_keys=False)
