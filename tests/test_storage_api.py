"""Storage objects as the API serves them: PersistentVolume, PersistentVolumeClaim, StorageClass.

Given the real apiserver: a volume and a claim are stored with Kubernetes'
defaults and their protection finalizers; a claim naming no class gets the
default StorageClass (and "" stays ""); bad volumes, claims and classes are
refused with Kubernetes' messages and nothing is stored; a claim's spec is
frozen after creation; a bound claim grows only if its class allows it; a
LimitRange bounds a claim's size and a ResourceQuota counts claims and storage.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from client import Client
from controlplane.apiserver.admission.resourcequota import ResourceQuota
from controlplane.apiserver.registry import Registry
from controlplane.printers import convertor_for
from controlplane.printers.table import GenerateOptions
from proto import core_pb2, kinds, manifest, storage_pb2
from proto.errors import Forbidden, Invalid, NotFound
from proto.wellknown import ANNOTATION_DEFAULT_STORAGE_CLASS, FINALIZER_PV_PROTECTION, FINALIZER_PVC_PROTECTION
from tests.controllers_support import eventually
from tests.test_admission import add_quota, fresh_namespace
from tests.test_admission import registry as registry
from tests.test_jobs import kubectl

NOW = dt.datetime.now(dt.UTC)


def pv(name: str, size: str = "1Gi", **spec: object) -> core_pb2.PersistentVolume:
    body = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}
    return manifest.from_dict(body)  # type: ignore[return-value]


def pvc(name: str, namespace: str, size: str = "1Gi", **spec: object) -> core_pb2.PersistentVolumeClaim:
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec}}
    return manifest.from_dict(body)  # type: ignore[return-value]


def storage_class(name: str, *, default: bool = False, **fields: object) -> storage_pb2.StorageClass:
    body: dict[str, object] = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                               "metadata": {"name": name}, "provisioner": "example.com/nothing", **fields}
    if default:
        body["metadata"] = {"name": name, "annotations": {ANNOTATION_DEFAULT_STORAGE_CLASS: "true"}}
    return manifest.from_dict(body)  # type: ignore[return-value]


def causes_of(err: Invalid) -> list[tuple[str, str]]:
    """The (field, message) pairs of an Invalid answer (over gRPC they travel in its message)."""
    detail = str(err).partition(" is invalid: ")[2]
    return [(path, message) for path, _, message in (c.partition(": ") for c in detail.split("; "))]


async def force_delete(client: Client, obj: core_pb2.PersistentVolume | core_pb2.PersistentVolumeClaim) -> None:
    """Delete past the protection finalizer (no controller runs in these tests)."""
    cls, meta = type(obj), obj.metadata
    try:
        current = await client.get(cls, meta.name, meta.namespace)
        del current.metadata.finalizers[:]
        await client.update(current)
        await client.delete(cls, meta.name, meta.namespace)
    except NotFound:
        pass


@pytest.fixture
async def cleanup(client: Client) -> AsyncIterator[list[object]]:
    made: list[object] = []
    yield made
    for obj in reversed(made):
        if isinstance(obj, storage_pb2.StorageClass):
            try:
                await client.delete(storage_pb2.StorageClass, obj.metadata.name)
            except NotFound:
                pass
        else:
            await force_delete(client, obj)  # type: ignore[arg-type]


async def test_volume_and_claim_are_stored_with_defaults_and_protection(client: Client, namespace: str,
                                                                        cleanup: list[object]) -> None:
    volume = await client.create(pv(f"{namespace}-v"))
    cleanup.append(volume)
    assert volume.spec.persistent_volume_reclaim_policy == "Retain"
    assert volume.spec.volume_mode == "Filesystem"
    assert volume.status.phase == "Pending"
    assert list(volume.metadata.finalizers) == [FINALIZER_PV_PROTECTION]
    claim = await client.create(pvc("data", namespace, storageClassName=""))
    cleanup.append(claim)
    assert claim.status.phase == "Pending"
    assert claim.spec.HasField("storage_class_name") and claim.spec.storage_class_name == ""
    assert list(claim.metadata.finalizers) == [FINALIZER_PVC_PROTECTION]
    # Deleting a claim only marks it: the finalizer holds it until the pvc-protection controller lets go.
    await client.delete(core_pb2.PersistentVolumeClaim, "data", namespace)
    held = await client.get(core_pb2.PersistentVolumeClaim, "data", namespace)
    assert held.metadata.HasField("deletion_timestamp")
    cells = convertor_for(kinds.resolve("pvc")).row(held, GenerateOptions(now=NOW))
    assert cells[1] == "Terminating"


async def test_a_claim_without_class_gets_the_default_one(client: Client, namespace: str,
                                                          cleanup: list[object]) -> None:
    without = await client.create(pvc("before", namespace))
    cleanup.append(without)
    assert not without.spec.HasField("storage_class_name")  # no default class yet: none given
    sc = await client.create(storage_class(f"{namespace}-fast", default=True, allowVolumeExpansion=True))
    cleanup.append(sc)
    assert (sc.reclaim_policy, sc.volume_binding_mode) == ("Delete", "Immediate")

    async def defaulted() -> core_pb2.PersistentVolumeClaim | None:
        claim = await client.create(pvc(f"c{len(cleanup)}", namespace), dry_run=True)
        return claim if claim.spec.storage_class_name == sc.metadata.name else None

    await eventually(defaulted, "the admission cache to see the default class", timeout=10)
    claim = await client.create(pvc("after", namespace))
    cleanup.append(claim)
    assert claim.spec.storage_class_name == sc.metadata.name
    explicit = await client.create(pvc("none", namespace, storageClassName=""))
    cleanup.append(explicit)
    assert explicit.spec.storage_class_name == ""
    # The table marks the default class.
    cells = convertor_for(kinds.resolve("sc")).row(sc, GenerateOptions(now=NOW))
    assert cells[:5] == [f"{sc.metadata.name} (default)", "example.com/nothing", "Delete", "Immediate", "true"]


@pytest.mark.parametrize(("body", "causes"), [
    ({"accessModes": []}, [("spec.accessModes", "Required value")]),
    ({"accessModes": ["ReadWriteSometimes"]},
     [("spec.accessModes", 'Unsupported value: "ReadWriteSometimes": supported values: "ReadOnlyMany", '
                           '"ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"')]),
    ({"capacity": {}}, [("spec.capacity", "Required value")]),
    ({"capacity": {"storage": "0"}}, [("spec.capacity.storage", 'Invalid value: "0": must be greater than zero')]),
    ({"persistentVolumeReclaimPolicy": "Recycle"},
     [("spec.persistentVolumeReclaimPolicy", 'Unsupported value: "Recycle": supported values: "Delete", "Retain"')]),
    ({"hostPath": None}, [("spec", "Required value: must specify a volume type")]),
    ({"nfs": {"server": "10.0.0.1", "path": "/exports"}},
     [("spec.nfs", "Forbidden: may not specify more than 1 volume type")]),
    ({"hostPath": None, "local": {"path": "/mnt/disk"}},
     [("spec.nodeAffinity", "Required value: Local volume requires node affinity")]),
    ({"hostPath": None, "nfs": {"server": "", "path": "exports"}},
     [("spec.nfs.server", "Required value"), ("spec.nfs.path", 'Invalid value: "exports": must be an absolute path')]),
    ({"mountOptions": ["ro"]},
     [("spec.mountOptions", "Forbidden: may not specify mount options for this volume type")]),
])
async def test_bad_volumes_are_refused(client: Client, namespace: str, body: dict[str, object],
                                       causes: list[tuple[str, str]]) -> None:
    volume = manifest.to_dict(pv(f"{namespace}-bad"))
    volume["spec"].update(body)
    volume["spec"] = {k: v for k, v in volume["spec"].items() if v is not None}
    with pytest.raises(Invalid) as refused:
        await client.create(manifest.from_dict(volume))
    assert causes_of(refused.value) == causes
    with pytest.raises(NotFound):
        await client.get(core_pb2.PersistentVolume, f"{namespace}-bad")


async def test_an_nfs_volume_is_a_volume(client: Client, namespace: str, cleanup: list[object]) -> None:
    volume = manifest.to_dict(pv(f"{namespace}-nfs"))
    del volume["spec"]["hostPath"]
    volume["spec"].update(nfs={"server": "10.0.0.1", "path": "/exports/a"}, mountOptions=["nfsvers=4.1"],
                          accessModes=["ReadWriteMany"])
    created = await client.create(manifest.from_dict(volume))
    cleanup.append(created)
    assert manifest.to_dict(created)["spec"]["nfs"] == {"server": "10.0.0.1", "path": "/exports/a"}


@pytest.mark.parametrize(("spec", "causes"), [
    ({"accessModes": []}, [("spec.accessModes", "Required value: at least 1 access mode is required")]),
    ({"resources": {}}, [("spec.resources[storage]", "Required value")]),
    ({"resources": {"requests": {"storage": "-1Gi"}}},
     [("spec.resources[storage]", 'Invalid value: "-1Gi": must be greater than zero')]),
    ({"storageClassName": "Not_A_Name"},
     [("spec.storageClassName", 'Invalid value: "Not_A_Name": a lowercase RFC 1123 subdomain must consist of lower '
                                "case alphanumeric characters, '-' or '.', and must start and end with an "
                                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]),
    ({"volumeMode": "Raw"}, [("spec.volumeMode", 'Unsupported value: "Raw": supported values: "Block", '
                                                 '"Filesystem"')]),
])
async def test_bad_claims_are_refused(client: Client, namespace: str, spec: dict[str, Any],
                                      causes: list[tuple[str, str]]) -> None:
    with pytest.raises(Invalid) as refused:
        await client.create(pvc("bad", namespace, **spec))
    assert causes_of(refused.value) == causes


async def test_a_claims_spec_is_frozen_and_grows_only_as_its_class_allows(client: Client, namespace: str,
                                                                         cleanup: list[object]) -> None:
    rigid = await client.create(storage_class(f"{namespace}-rigid"))
    cleanup.append(rigid)
    claim = await client.create(pvc("data", namespace, storageClassName=rigid.metadata.name))
    cleanup.append(claim)
    claim.spec.access_modes[:] = ["ReadWriteMany"]
    with pytest.raises(Invalid) as refused:
        await client.update(claim)
    assert causes_of(refused.value) == [("spec", "Forbidden: spec is immutable after creation except "
                                             "resources.requests and volumeAttributesClassName for bound claims")]
    # Bound (as the binder would write it), a claim may grow, but only if its class allows expansion.
    claim = await client.get(core_pb2.PersistentVolumeClaim, "data", namespace)
    claim.status.phase = "Bound"
    claim = await client.update_status(claim)
    claim.spec.resources.requests["storage"] = "2Gi"
    with pytest.raises(Forbidden, match="only dynamically provisioned pvc can be resized and the storageclass "
                                        "that provisions the pvc must support resize"):
        await client.update(claim)
    claim.spec.resources.requests["storage"] = "512Mi"
    with pytest.raises(Invalid, match="field can not be less than previous value"):
        await client.update(claim)


async def test_storage_classes_are_validated_and_keep_what_made_volumes(client: Client, namespace: str,
                                                                         cleanup: list[object]) -> None:
    with pytest.raises(Invalid) as refused:
        await client.create(storage_class(f"{namespace}-bad", provisioner="", volumeBindingMode="Later",
                                          reclaimPolicy="Recycle"))
    assert causes_of(refused.value) == [
        ("provisioner", "Required value"),
        ("reclaimPolicy", 'Unsupported value: "Recycle": supported values: "Delete", "Retain"'),
        ("volumeBindingMode", 'Unsupported value: "Later": supported values: "Immediate", "WaitForFirstConsumer"')]
    sc = await client.create(storage_class(f"{namespace}-sc", parameters={"nodePath": "/a"}))
    cleanup.append(sc)
    sc.parameters["nodePath"] = "/b"
    sc.provisioner = "example.com/other"
    with pytest.raises(Invalid) as refused:
        await client.update(sc)
    assert causes_of(refused.value) == [("provisioner", "Forbidden: updates to provisioner are forbidden."),
                                    ("parameters", "Forbidden: updates to parameters are forbidden.")]


async def test_limit_range_bounds_a_claims_size(client: Client, namespace: str, cleanup: list[object]) -> None:
    limits = manifest.from_dict({"apiVersion": "v1", "kind": "LimitRange",
                                 "metadata": {"name": "storage", "namespace": namespace},
                                 "spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"},
                                                      "max": {"storage": "2Gi"}}]}})
    await client.create(limits)

    async def refused_small() -> str | None:
        try:
            cleanup.append(await client.create(pvc("probe", namespace, "500Mi", storageClassName=""), dry_run=True))
        except Forbidden as err:
            return str(err)
        return None

    message = await eventually(refused_small, "LimitRanger to see the LimitRange", timeout=10)
    assert 'persistentvolumeclaims "probe" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, ' \
           "but request is 500Mi" in message
    with pytest.raises(Forbidden, match="maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"):
        await client.create(pvc("big", namespace, "5Gi", storageClassName=""))
    cleanup.append(await client.create(pvc("fits", namespace, "2Gi", storageClassName="")))


async def test_quota_counts_claims_and_storage(registry: tuple[Registry, ResourceQuota]) -> None:
    # Through a registry whose quota plugin counts every kind from storage (the apiserver's chain
    # enforces claims once it is given `stored_objects`, as the pods are today).
    reg, plugin = registry
    ns = fresh_namespace()
    claims = kinds.resolve("persistentvolumeclaims")
    await add_quota(reg, plugin, ns, "storage", {"persistentvolumeclaims": 2, "requests.storage": "3Gi",
                                                 "gold.storageclass.storage.k8s.io/requests.storage": "1Gi"})
    await reg.create(claims, ns, pvc("a", ns, "2Gi", storageClassName=""))
    with pytest.raises(Forbidden, match=re.escape("exceeded quota: storage, requested: requests.storage=2Gi, used: "
                                                  "requests.storage=2Gi, limited: requests.storage=3Gi")):
        await reg.create(claims, ns, pvc("b", ns, "2Gi", storageClassName=""))
    gold = "gold.storageclass.storage.k8s.io/requests.storage"
    with pytest.raises(Forbidden, match=re.escape(f"requested: {gold}=1500Mi")):
        await reg.create(claims, ns, pvc("g", ns, "1500Mi", storageClassName="gold"))
    await reg.create(claims, ns, pvc("c", ns, "1Gi", storageClassName=""))
    with pytest.raises(Forbidden, match=re.escape("exceeded quota: storage, requested: persistentvolumeclaims=1")):
        await reg.create(claims, ns, pvc("d", ns, "1Mi", storageClassName=""))
    stored = await reg.get(kinds.resolve("resourcequotas"), ns, "storage")
    assert dict(stored.status.used) == {  # type: ignore[attr-defined]
        "persistentvolumeclaims": "2", "requests.storage": "3Gi",
        "gold.storageclass.storage.k8s.io/requests.storage": "0"}


async def test_kubectl_applies_and_lists_volumes_claims_and_classes(http_url: str, namespace: str, tmp_path: Path,
                                                                   client: Client, cleanup: list[object]) -> None:
    sc_name, pv_name = f"{namespace}-sc", f"{namespace}-pv"
    manifests = tmp_path / "storage.yaml"
    manifests.write_text(f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {sc_name}}}
provisioner: example.com/nothing
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv_name}}}
spec:
  capacity: {{storage: 2Gi}}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: {sc_name}
  hostPath: {{path: /tmp/{pv_name}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {namespace}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {sc_name}
  resources: {{requests: {{storage: 1Gi}}}}
""")
    cleanup += [storage_class(sc_name), pv(pv_name), pvc("data", namespace)]
    made = await asyncio.to_thread(kubectl, http_url, tmp_path, "apply", "-f", str(manifests))
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [f"storageclass.storage.k8s.io/{sc_name} created",
                                        f"persistentvolume/{pv_name} created", "persistentvolumeclaim/data created"]
    listed = await asyncio.to_thread(kubectl, http_url, tmp_path, "-n", namespace, "get", "pv,pvc,sc", "-o", "wide")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    headers = [line for line in lines if line[0] == "NAME"]
    assert headers[0] == ["NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS", "CLAIM",
                          "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE", "VOLUMEMODE"]
    assert headers[1] == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
                          "VOLUMEATTRIBUTESCLASS", "AGE", "VOLUMEMODE"]
    assert headers[2] == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION",
                          "AGE"]
    rows = {line[0]: line for line in lines if line[0] != "NAME"}
    assert rows[f"persistentvolume/{pv_name}"][1:5] == ["2Gi", "RWO,ROX", "Retain", "Pending"]
    assert rows["persistentvolumeclaim/data"][1:3] == ["Pending", sc_name]
    assert rows[f"storageclass.storage.k8s.io/{sc_name}"][1:5] == ["example.com/nothing", "Delete",
                                                                   "WaitForFirstConsumer", "false"]
