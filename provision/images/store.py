"""kctl's local image store: what `kctl image build` made, waiting for `kctl image push`.

It is an OCI image layout (the standard on-disk form: `oci-layout`,
`index.json`, `blobs/sha256/<hex>`) under `$FLOTILLA_HOME/images` (default
~/.flotilla/images), so other OCI tools can read it too. Each image is one
entry of index.json, named by its `org.opencontainers.image.ref.name`
annotation (`web:1`, `alice/app:latest`, `10.0.0.5:5000/tool:2`); blobs are
shared between images and written once (a file per digest, written to a
temporary name then renamed, so a crash never leaves a short blob).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.images.oci import MANIFEST_TYPE, OCIImage, digest_of, parse_reference

REF_NAME = "org.opencontainers.image.ref.name"


def default_root() -> Path:
    return Path(os.environ.get("FLOTILLA_HOME", Path.home() / ".flotilla")) / "images"


def local_name(name: str) -> str:
    """The store's name for `name`: validated, with the tag made explicit (`web` → `web:latest`)."""
    return parse_reference(name).familiar()


@dataclass(frozen=True)
class StoredImage:
    name: str
    digest: str
    size: int  # bytes of config and layers


class ImageStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "blobs" / algorithm / hexdigest

    def _index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)

    def save(self, name: str, image: OCIImage) -> str:
        """Store `image` as `name` (replacing an image of that name); returns the stored name."""
        name = local_name(name)
        for digest, data in {image.digest: image.manifest, **image.blobs()}.items():
            if not self._blob_path(digest).exists():
                self._write(self._blob_path(digest), data)
        index = self._index()
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != name]
        index["manifests"].append({"mediaType": MANIFEST_TYPE, "digest": image.digest, "size": len(image.manifest),
                                   "annotations": {REF_NAME: name}})
        self._write(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        self._write(self.root / "index.json", json.dumps(index, indent=1).encode())
        return name

    def load(self, name: str) -> OCIImage | None:
        """The image stored as `name`, or None; blobs are checked against their digests."""
        wanted = local_name(name)
        for entry in self._index()["manifests"]:
            if entry.get("annotations", {}).get(REF_NAME) == wanted:
                manifest = self._read(entry["digest"])
                parsed = json.loads(manifest)
                config = self._read(parsed["config"]["digest"])
                layers = tuple(self._read(layer["digest"]) for layer in parsed["layers"])
                return OCIImage(manifest, config, layers)
        return None

    def _read(self, digest: str) -> bytes:
        data = self._blob_path(digest).read_bytes()
        if digest_of(data) != digest:
            raise RuntimeError(f"image store {self.root}: blob {digest} is corrupt (its content does not match)")
        return data

    def list(self) -> list[StoredImage]:
        images = []
        for entry in self._index()["manifests"]:
            manifest = json.loads(self._blob_path(entry["digest"]).read_bytes())
            size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
            images.append(StoredImage(entry.get("annotations", {}).get(REF_NAME, ""), entry["digest"], size))
        return sorted(images, key=lambda i: i.name)
