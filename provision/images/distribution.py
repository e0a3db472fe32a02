"""Push images to, and fetch them from, a registry over the OCI distribution API (plain HTTP).

The provisioner pushes the base images to the cluster registry at `cluster up`
(provision/images/base.py), `kctl image push` pushes what `kctl image build` made,
and a build `FROM` an image it does not have fetches it here. The wire work is
python-dxf's (a maintained client of the distribution API): HEAD a blob to see
whether the registry has it, upload it monolithically (POST then PUT with the
digest), and PUT the manifest under its tag with the manifest's own media
type. This module adds what an image means on top of blobs: every config and
layer before the manifest that names them, already-present blobs skipped (so
pushing again is cheap), the digest the registry ends up with checked against
ours, and pulled blobs verified against the digests the manifest names.

Pulls go over plain HTTP (`insecure=True`): the cluster registry's pull side
listens on the private node network only, read-only, with no TLS. Pushes to a
cluster go to its push side with `credentials` (basic auth, which python-dxf
only sends over TLS: the push port serves HTTPS under the cluster CA,
`ca_file`); provision/images/registry.py has the two.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFError, DXFUnauthorizedError

from provision.images.oci import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, OCIImage, make_image
from provision.images.registry import Credentials, PushTarget

DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
GZIP_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip",
                    "application/vnd.docker.image.rootfs.diff.tar.gzip")
TIMEOUT = 120.0


class RegistryError(RuntimeError):
    """The registry could not be reached, refused a request, or holds no such image."""


@dataclass(frozen=True)
class PushResult:
    reference: str  # registry/repository:tag
    digest: str  # the manifest's digest, as the registry reports it
    uploaded: int  # blobs sent
    skipped: int  # blobs the registry already had


def _repo(registry: str, repository: str, credentials: Credentials | None = None,
          ca_file: Path | None = None) -> DXF:
    if credentials is None:
        return DXF(registry, repository, insecure=True, timeout=TIMEOUT)

    def authenticate(repo: DXFBase, response: requests.Response) -> None:
        repo.authenticate(credentials.username, credentials.password, response=response)

    return DXF(registry, repository, auth=authenticate, insecure=False, timeout=TIMEOUT,
               tlsverify=str(ca_file) if ca_file else True)


def _has_blob(repo: DXF, digest: str) -> bool:
    try:
        repo.blob_size(digest)
        return True
    except requests.HTTPError as err:
        if err.response is not None and err.response.status_code == 404:
            return False
        raise


def _mounted(repo: DXF, digest: str, sources: tuple[str, ...]) -> bool:
    """Whether a cross-repository mount of `digest` from one of `sources` worked (no upload needed)."""
    for source in sources:
        try:
            repo.mount_blob(source, digest)
            return True
        except (DXFError, requests.HTTPError):
            continue
    return False


def push(image: OCIImage, *, registry: str, repository: str, tag: str,
         target: PushTarget | None = None, mount_from: tuple[str, ...] = ()) -> PushResult:
    """Upload the image's blobs (those missing) then its manifest as `repository:tag`.

    With `target` (a cluster's push side), the upload goes there with its credentials; `registry` stays the
    name the image is known by (the pull side, which serves the same storage). A missing blob that one of
    the `mount_from` repositories holds (the base image's) is mounted from there rather than sent again."""
    reference = f"{registry}/{repository}:{tag}"
    uploaded = skipped = 0
    address, credentials, ca_file = (target.address, target.credentials, target.ca_file) if target else (
        registry, None, None)
    try:
        with _repo(address, repository, credentials, ca_file) as repo:
            for digest, data in image.blobs().items():
                if _has_blob(repo, digest) or _mounted(repo, digest, mount_from):
                    skipped += 1
                    continue
                repo.push_blob(data=iter([data]), digest=digest, check_exists=False)
                uploaded += 1
            # Blobs first: a registry refuses a manifest naming a blob it has not got.
            repo.set_manifest(tag, image.manifest.decode())
            stored = repo.head_manifest_and_response(tag)[1].headers.get("Docker-Content-Digest", "")
    except (requests.RequestException, DXFError) as err:
        raise RegistryError(f"pushing {reference}: {_describe(err)}") from err
    if stored != image.digest:
        raise RegistryError(f"pushing {reference}: the registry stored manifest {stored}, not {image.digest}")
    return PushResult(reference, stored, uploaded, skipped)


def _pull_blob(repo: DXF, digest: str) -> bytes:
    """The blob's bytes; python-dxf checks them against `digest` as they arrive."""
    chunks = repo.pull_blob(digest)
    assert not isinstance(chunks, tuple)  # a tuple only when size=True is asked for
    return b"".join(chunks)


def pull(*, registry: str, repository: str, tag: str) -> OCIImage:
    """Fetch `repository:tag` (manifest, config, layers; digests verified); gzip layers come back uncompressed."""
    reference = f"{registry}/{repository}:{tag}"
    try:
        with _repo(registry, repository) as repo:
            response = repo.get_manifest_and_response(tag)[1]
            manifest = json.loads(response.content)
            kind = manifest.get("mediaType") or response.headers.get("Content-Type", "")
            if kind not in (MANIFEST_TYPE, DOCKER_MANIFEST_TYPE):
                raise RegistryError(f"{reference} is a {kind or 'manifest of unknown type'}: only single-platform "
                                    "image manifests are supported")
            config = _pull_blob(repo, manifest["config"]["digest"])
            layers = []
            for layer in manifest["layers"]:
                data = _pull_blob(repo, layer["digest"])
                if layer.get("mediaType") in GZIP_LAYER_TYPES:
                    data = gzip.decompress(data)
                elif layer.get("mediaType") != LAYER_TYPE:
                    raise RegistryError(f"{reference}: layer media type {layer.get('mediaType')} is not supported")
                layers.append(data)
    except (requests.RequestException, DXFError) as err:
        raise RegistryError(f"pulling {reference}: {_describe(err)}") from err
    parsed = json.loads(config)
    if manifest["config"].get("mediaType", CONFIG_TYPE) == CONFIG_TYPE and not any(
            m in GZIP_LAYER_TYPES for m in (layer.get("mediaType") for layer in manifest["layers"])):
        # Ours (or built the same way): keep the exact bytes, so the digest is the registry's.
        return OCIImage(response.content, config, tuple(layers))
    # Re-expressed as an OCI image with uncompressed layers: what a build on top of it needs.
    return make_image(layers, parsed.get("config", {}), history=parsed.get("history"))


def _describe(err: Exception) -> str:
    if isinstance(err, DXFUnauthorizedError):
        return "HTTP 401: the registry refused these credentials"
    if isinstance(err, requests.HTTPError) and err.response is not None:
        if err.response.status_code == 404:
            return "not found in the registry"
        if err.response.status_code == 401:
            return "HTTP 401: the registry wants credentials (pushes need the cluster's, from its PKI folder)"
        if err.response.status_code == 405:
            return ("HTTP 405: this registry is read-only (a cluster's pull side); push to its push side "
                    "with the cluster's credentials")
        return f"HTTP {err.response.status_code}: {err.response.text.strip()[:300]}"
    if isinstance(err, requests.ConnectionError):
        return "cannot connect (is the registry running and reachable?)"
    return str(err) or type(err).__name__
