"""persistentVolumeClaim volumes: the claim's bound volume, resolved to a directory on this node.

A pod names a claim; the kubelet follows it to the PersistentVolume the binder
bound it to and mounts that volume's directory into the containers (a bind
mount, as for hostPath; read-only if the pod's volume says `readOnly`):

| volume source | on the node |
|---|---|
| hostPath | the path, checked against its `type` (hostpath.py) |
| local | the path, which must exist; a local-path volume's is made at its first mount (0777) |
| nfs | the export, mounted per pod under the pod's directory by the volume manager (nfs.py) |

A local-path directory is made mode 0777 so containers of any user may write to it.

While the claim is missing or not bound yet the volume cannot be set up: the
pod waits in ContainerCreating with FailedMount events naming the claim, and
starts once the binder (or the provisioner) has done its part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from client import Client
from nodeagent.kubelet.volumes import hostpath
from nodeagent.kubelet.volumes.errors import SetUpError
from proto import core_pb2
from proto.errors import NotFound
from proto.wellknown import ANNOTATION_PROVISIONED_BY, LOCAL_PATH_PROVISIONER


@dataclass(frozen=True)
class ClaimVolume:
    """Where a claim's volume is on this node, and whether the pod asked for it read-only."""

    path: Path
    read_only: bool


async def resolve(client: Client, pod: core_pb2.Pod, volume: core_pb2.Volume) -> tuple[core_pb2.PersistentVolume,
                                                                                          ClaimVolume]:
    """The bound volume of the pod's claim and its directory; SetUpError while it cannot be used."""
    source, namespace = volume.persistent_volume_claim, pod.metadata.namespace
    try:
        pvc = await client.get(core_pb2.PersistentVolumeClaim, source.claim_name, namespace)
    except NotFound:
        raise SetUpError(f'persistentvolumeclaim "{source.claim_name}" not found') from None
    if not pvc.spec.volume_name or pvc.status.phase != "Bound":
        raise SetUpError(f"error processing PVC {namespace}/{source.claim_name}: PVC is not bound")
    try:
        pv = await client.get(core_pb2.PersistentVolume, pvc.spec.volume_name)
    except NotFound:
        raise SetUpError(f'persistentvolume "{pvc.spec.volume_name}" not found') from None
    if pv.spec.HasField("host_path"):
        path = Path(pv.spec.host_path.path)
    elif pv.spec.HasField("local"):
        path = Path(pv.spec.local.path)
    elif pv.spec.HasField("nfs"):
        path = Path(pv.spec.nfs.path)  # the export's path; the volume manager mounts it under the pod
    else:
        raise SetUpError(f'persistentvolume "{pv.metadata.name}" has no volume source this node can mount')
    return pv, ClaimVolume(path, source.read_only)


def set_up(pv: core_pb2.PersistentVolume, claim: ClaimVolume) -> None:
    """Make the volume's directory ready on the node (blocking: run in a thread)."""
    if pv.spec.HasField("host_path"):
        hostpath.set_up(claim.path, pv.spec.host_path.type)
        return
    if pv.metadata.annotations.get(ANNOTATION_PROVISIONED_BY) == LOCAL_PATH_PROVISIONER:
        if not claim.path.is_dir():
            try:
                claim.path.mkdir(parents=True, exist_ok=True)
                os.chmod(claim.path, 0o777)
            except OSError as err:
                raise SetUpError(f"mkdir {claim.path}: {(err.strerror or str(err)).lower()}") from None
        return
    if not claim.path.exists():
        raise SetUpError(f'path "{claim.path}" does not exist')
