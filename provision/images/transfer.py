"""Images in and out of the cluster registry with skopeo: `kctl image load` of archives, and what the registry holds.

`kctl image load FILE` takes what `docker save` writes (a docker-archive:
`manifest.json` naming each image's config, layers and RepoTags) or an OCI
archive (`oci-layout` + `index.json`, each manifest named by its
`org.opencontainers.image.ref.name` or containerd's `io.containerd.image.name`
annotation), as `kind load image-archive` does, every image and every tag in
it. skopeo (Debian's, a well-kept tool of the containers project) reads each
one, whatever its format, into an OCI layout, and the distribution client
(provision/images/distribution.py) pushes it to the cluster registry's push
side with the cluster's credentials (basic auth over TLS under the cluster CA;
an open registry given with --registry gets plain HTTP), skipping the blobs
it already has (a busybox-based image uploads only its own layers). Names keep docker.io's layout
that the nodes pull by (`redis` → `library/redis:latest`); an image named for
another registry (`quay.io/x/y:1`) is stored under its path (`x/y:1`) and must
be run by the cluster registry's name, since nodes fetch other registries'
names from those registries.

`catalog` lists the registry's repositories and tags over the distribution
API's `/v2/_catalog` and `/v2/<name>/tags/list` on the read-only pull side.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from provision.images import distribution
from provision.images.oci import ImageReference, parse_reference
from provision.images.registry import PushTarget
from provision.images.store import ImageStore

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
DOCKER_IO = ("docker.io", "index.docker.io", "registry-1.docker.io")
TIMEOUT = 600


class TransferError(RuntimeError):
    """An archive could not be read or an image not copied (the message says which and why)."""


@dataclass(frozen=True)
class ArchiveImage:
    """One named image in an archive: skopeo's source reference and the name it carries."""

    source: str  # "docker-archive:/x.tar:redis:latest", "oci-archive:/x.tar:redis:latest"
    name: str  # "redis:latest"


def archive_images(path: Path) -> list[ArchiveImage]:
    """Every (image, tag) of a `docker save` archive or an OCI archive; TransferError names what is wrong."""
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            members = {n.removeprefix("./"): n for n in names}
            if "manifest.json" in members and "index.json" not in members:
                return _docker_archive(path, _json(tar, members["manifest.json"], path))
            if "index.json" in members:
                return _oci_archive(path, _json(tar, members["index.json"], path))
    except (tarfile.TarError, OSError) as err:
        raise TransferError(f"{path}: not an image archive ({err})") from None
    raise TransferError(f"{path}: neither a docker save archive (manifest.json) nor an OCI archive (index.json)")


def _json(tar: tarfile.TarFile, member: str, path: Path) -> object:
    extracted = tar.extractfile(member)
    if extracted is None:
        raise TransferError(f"{path}: {member} is not a file")
    try:
        return json.loads(extracted.read())
    except ValueError as err:
        raise TransferError(f"{path}: {member} is not JSON: {err}") from None


def _docker_archive(path: Path, manifest: object) -> list[ArchiveImage]:
    if not isinstance(manifest, list):
        raise TransferError(f"{path}: manifest.json is not a list of images")
    found = []
    for i, entry in enumerate(manifest):
        tags = entry.get("RepoTags") or [] if isinstance(entry, dict) else []
        if not tags:
            raise TransferError(f"{path}: image {i} of the archive has no name (RepoTags); docker save it by name")
        found += [ArchiveImage(f"docker-archive:{path}:{tag}", str(tag)) for tag in tags]
    return found


def _oci_archive(path: Path, index: object) -> list[ArchiveImage]:
    manifests = index.get("manifests", []) if isinstance(index, dict) else []
    found = []
    for i, entry in enumerate(manifests):
        annotations = entry.get("annotations") or {}
        ref = str(annotations.get(REF_NAME, ""))
        name = str(annotations.get(CONTAINERD_NAME, "")) or ref
        if not ref or (":" not in name and "/" not in name):
            raise TransferError(f"{path}: manifest {i} of the OCI archive has no image name "
                                f"({REF_NAME} {ref!r}): save it with a name:tag")
        found.append(ArchiveImage(f"oci-archive:{path}:{ref}", name))
    if not found:
        raise TransferError(f"{path}: the OCI archive's index.json lists no images")
    return found


def cluster_reference(name: str) -> ImageReference:
    """Where image `name` goes in the cluster registry: docker.io's layout (`redis` → library/redis:latest)."""
    try:
        ref = parse_reference(name)
    except ValueError as err:
        raise TransferError(str(err)) from None
    if ref.registry in DOCKER_IO:
        return ImageReference("", ref.repository if "/" in ref.repository else f"library/{ref.repository}", ref.tag)
    return ImageReference("", ref.repository, ref.tag)


def skopeo() -> str:
    found = shutil.which("skopeo")
    if found is None:
        raise TransferError("skopeo is not installed (provision/install.sh installs it: apt-get install skopeo)")
    return found


def copy(source: str, *, registry: str, ref: ImageReference, target: PushTarget | None) -> str:
    """Copy skopeo `source` to `ref` in the registry (`target`: a cluster's push side); the name to pull it by.

    skopeo unpacks the archive's image into an OCI layout here, and the project's distribution client
    pushes it: skopeo 1.9's own push, reusing a layer the registry already holds uncompressed (the base
    images' layers), labels it gzip, which no client can then unpack.
    """
    with tempfile.TemporaryDirectory(prefix="flt-load-") as tmp:
        done = subprocess.run([skopeo(), "--insecure-policy", "copy", "--quiet", "--dest-decompress", source,
                               f"oci:{tmp}:image:latest"], capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "skopeo failed"
            raise TransferError(f"reading {source.split(':', 2)[-1]}: {why}")
        image = ImageStore(Path(tmp)).load("image:latest")
    if image is None:
        raise TransferError(f"reading {source.split(':', 2)[-1]}: skopeo wrote no image")
    try:
        result = distribution.push(image, registry=registry, repository=ref.repository, tag=ref.tag, target=target)
    except distribution.RegistryError as err:
        raise TransferError(str(err)) from None
    return str(result.reference)


def load(path: Path, *, registry: str, target: PushTarget | None) -> list[tuple[str, str]]:
    """Every image and tag of archive `path` into the registry: (name in the archive, name in the registry)."""
    return [(image.name, copy(image.source, registry=registry, ref=cluster_reference(image.name), target=target))
            for image in archive_images(path)]


def catalog(registry: str) -> list[tuple[str, str]]:
    """(repository, tag) of everything the registry (its pull side, plain HTTP) holds, sorted."""
    base = f"http://{registry}/v2"
    try:
        repositories: list[str] = []
        while True:  # distribution pages the catalog (at most 1000 a page), resuming after `last`
            after = repositories[-1] if repositories else ""
            reply = requests.get(f"{base}/_catalog", params={"n": "1000", "last": after}, timeout=10)
            reply.raise_for_status()
            page = reply.json().get("repositories") or []
            repositories += page
            if len(page) < 1000:
                break
        found = []
        for repository in repositories:
            tags = requests.get(f"{base}/{repository}/tags/list", timeout=10)
            tags.raise_for_status()
            found += [(repository, tag) for tag in tags.json().get("tags") or []]
    except (requests.RequestException, ValueError) as err:
        raise TransferError(f"registry {registry}: {err}") from None
    return sorted(found)
