"""Registry credentials for image pulls: a pod's imagePullSecrets as CRI AuthConfigs, per registry.

A `kubernetes.io/dockerconfigjson` Secret holds Docker's config file
(`{"auths": {"<registry>": {"username", "password", "auth"}}}`), and the
deprecated `kubernetes.io/dockercfg` the `auths` map alone. Like the
kubelet's keyring (pkg/credentialprovider), the keys are matched against the
registry of the image being pulled: `https://index.docker.io/v1/`,
`index.docker.io`, `registry-1.docker.io` and `docker.io` all mean Docker Hub;
any other key is a host[:port], with its scheme and path ignored. The kubelet
tries every matching credential in turn, then none (a public image needs none).
Where the pod's secrets come from its ServiceAccount, the ServiceAccount
admission plugin has already copied them into the pod, as in Kubernetes.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import urlsplit

from proto import cri_pb2

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockerconfigjson"
DOCKERCFG_KEY = ".dockercfg"
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class CredentialError(ValueError):
    """A pull secret's content is not a Docker config (the message names the secret)."""


def registry_of(image: str) -> str:
    """The registry host an image name pulls from (`nginx` → docker.io, `10.0.0.5:5000/web` → 10.0.0.5:5000)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return "docker.io" if first in DOCKER_HUB_NAMES else first
    return "docker.io"


def normalise_registry(key: str) -> str:
    """A Docker config `auths` key as a registry host: scheme and path dropped, Docker Hub's names made one."""
    host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    return "docker.io" if host in DOCKER_HUB_NAMES else host


def auths_of(secret_name: str, data: dict[str, bytes]) -> dict[str, cri_pb2.AuthConfig]:
    """The credentials in one pull secret's data, by registry host."""
    raw = data.get(DOCKER_CONFIG_KEY) or data.get(DOCKERCFG_KEY)
    if raw is None:
        raise CredentialError(f"secret {secret_name} has neither {DOCKER_CONFIG_KEY} nor {DOCKERCFG_KEY}")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise CredentialError(f"secret {secret_name}: not JSON: {err}") from None
    entries = doc.get("auths", doc) if DOCKER_CONFIG_KEY in data else doc
    if not isinstance(entries, dict):
        raise CredentialError(f"secret {secret_name}: `auths` is not a mapping")
    found: dict[str, cri_pb2.AuthConfig] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        username, password = str(entry.get("username", "")), str(entry.get("password", ""))
        if entry.get("auth") and not username:
            try:
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialError(f"secret {secret_name}: auths[{key}].auth is not base64 user:password") from None
        found[normalise_registry(key)] = cri_pb2.AuthConfig(username=username, password=password)
    return found


def matching(auths: list[dict[str, cri_pb2.AuthConfig]], image: str) -> list[cri_pb2.AuthConfig]:
    """The credentials of every pull secret (in the pod's order) for the registry `image` is pulled from."""
    registry = registry_of(image)
    return [by_registry[registry] for by_registry in auths if registry in by_registry]
