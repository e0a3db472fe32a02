"""CustomResourceDefinitions, as kubernetes.io's CronTab walk-through uses them, with real kubectl and clients.

Given the session's apiserver, a user applies the CronTab CRD of kubernetes.io
(printer columns, a validated and defaulted schema, the status and scale
subresources) and then works with CronTabs the way the page does: `kubectl get
crontabs` shows the columns; a CronTab breaking the schema is refused naming the
field; defaults appear and unknown fields are pruned; status and spec are
written apart; merge and JSON patches work and a strategic merge patch is a 415;
a watch sees changes; and deleting the CRD deletes its CronTabs. Bad CRDs (not
structural, badly named) and oversized objects are refused with nothing stored.
kopf, run as a user runs it, reconciles a custom resource and sees it deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client.rest import ApiException

from tests.kubectl_support import kubectl

GROUP = "stable.example.com"

CRONTAB_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"crontabs.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {},
                             "scale": {"specReplicasPath": ".spec.replicas",
                                       "statusReplicasPath": ".status.replicas"}},
            "additionalPrinterColumns": [
                {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "cronSpec": {"type": "string", "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
                                     "default": "5 0 * * *"},
                        "image": {"type": "string", "default": "my-awesome-cron-image"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }},
                    "status": {"type": "object", "properties": {
                        "replicas": {"type": "integer"},
                        "phase": {"type": "string"},
                    }},
                },
            }},
        }],
    },
}


def crontab(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "CronTab", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def api(http_url: str) -> Iterator[k8s.ApiClient]:
    with k8s.ApiClient(k8s.Configuration(host=http_url)) as client:
        yield client


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def established(ext: k8s.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = crd.status.conditions if crd.status is not None else None
    return any(c.type == "Established" and c.status == "True" for c in conditions or [])


@pytest.fixture(scope="module")
def crontabs(http_url: str, api: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CronTab CRD, applied with kubectl and Established."""
    folder = tmp_path_factory.mktemp("crd")
    (folder / "crd.yaml").write_text(yaml.safe_dump(CRONTAB_CRD))
    applied = kubectl(http_url, folder, "apply", "-f", str(folder / "crd.yaml"))
    assert applied.returncode == 0, applied.stderr
    ext = k8s.ApiextensionsV1Api(api)
    wait_for(lambda: established(ext, CRONTAB_CRD["metadata"]["name"]), "the CRD to be Established")
    yield CRONTAB_CRD["metadata"]["name"]


@pytest.fixture
def ns(api: k8s.ApiClient) -> str:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


class Objects:
    """The Python client's CustomObjectsApi, its answers typed as the dicts they are."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = k8s.CustomObjectsApi(api)

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        call = getattr(self.api, name)

        def typed(*args: Any, **kwargs: Any) -> dict[str, Any]:
            answer = call(*args, **kwargs)
            assert isinstance(answer, dict)
            return answer
        return typed


def custom(api: k8s.ApiClient) -> Objects:
    return Objects(api)


def message(err: ApiException) -> str:
    text: str = json.loads(str(err.body))["message"]
    return text


# ---------------------------------------------------------------- the CRD itself


def test_crd_is_established_with_names_and_finalizer(crontabs: str, api: k8s.ApiClient, http_url: str,
                                                     tmp_path: Path) -> None:
    crd = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(crontabs)
    assert crd.status is not None and crd.status.accepted_names is not None and crd.metadata is not None
    conditions = {c.type: c.status for c in crd.status.conditions or []}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.accepted_names.kind == "CronTab"
    assert crd.spec.names.list_kind == "CronTabList"  # defaulted
    assert "customresourcecleanup.apiextensions.k8s.io" in (crd.metadata.finalizers or [])
    got = kubectl(http_url, tmp_path, "get", "crd", crontabs)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[0].split() == ["NAME", "CREATED", "AT"]
    resources = kubectl(http_url, tmp_path, "api-resources", "--api-group", GROUP)
    assert "crontabs" in resources.stdout and "ct" in resources.stdout and "CronTab" in resources.stdout


# ---------------------------------------------------------------- objects


def test_kubectl_get_shows_printer_columns_and_defaults(crontabs: str, ns: str, http_url: str,
                                                        tmp_path: Path) -> None:
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(crontab("my-new-cron-object", cronSpec="* * * * */5",
                                                             image="my-awesome-cron-image")))
    created = kubectl(http_url, tmp_path, "apply", "-n", ns, "-f", str(tmp_path / "ct.yaml"))
    assert created.returncode == 0, created.stderr
    got = kubectl(http_url, tmp_path, "get", "crontabs", "-n", ns)
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.strip().split("\n")
    assert header.split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert row.split()[:7] == ["my-new-cron-object", "*", "*", "*", "*", "*/5", "1"]  # replicas defaulted
    short = kubectl(http_url, tmp_path, "get", "ct", "my-new-cron-object", "-n", ns, "-o", "json")
    assert short.returncode == 0, short.stderr
    obj = json.loads(short.stdout)
    assert obj["apiVersion"] == f"{GROUP}/v1" and obj["kind"] == "CronTab"
    assert obj["spec"] == {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image", "replicas": 1}
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["uid"]
    # A second client-side apply is a merge patch (kubectl's choice for custom kinds): a new generation.
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(crontab("my-new-cron-object", cronSpec="* * * * */5",
                                                             image="another-image")))
    again = kubectl(http_url, tmp_path, "apply", "-n", ns, "-f", str(tmp_path / "ct.yaml"))
    assert again.returncode == 0 and "configured" in again.stdout, again.stderr
    obj = json.loads(kubectl(http_url, tmp_path, "get", "ct", "my-new-cron-object", "-n", ns, "-o", "json").stdout)
    assert obj["spec"]["image"] == "another-image" and obj["metadata"]["generation"] == 2


def test_schema_violation_is_refused_naming_the_field(crontabs: str, ns: str, http_url: str, tmp_path: Path,
                                                      api: k8s.ApiClient) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(crontab("bad", cronSpec="* * * *", replicas="three")))
    refused = kubectl(http_url, tmp_path, "apply", "-n", ns, "-f", str(tmp_path / "bad.yaml"))
    assert refused.returncode != 0
    assert 'The CronTab "bad" is invalid' in refused.stderr
    assert ('spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"'
            in refused.stderr)
    assert "spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match" in refused.stderr
    with pytest.raises(ApiException) as err:
        custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("big", replicas=11))
    assert err.value.status == 422
    assert "spec.replicas in body should be less than or equal to 10" in message(err.value)
    listed = custom(api).list_namespaced_custom_object(GROUP, "v1", ns, "crontabs")
    assert listed["items"] == []  # nothing stored


def test_unknown_fields_are_pruned_unless_preserved(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    body = crontab("pruned", cronSpec="1 2 3 4 5", color="blue", extra={"anything": {"goes": 1}})
    body["topLevel"] = True
    created = custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", body)
    assert "color" not in created["spec"] and "topLevel" not in created
    assert created["spec"]["extra"] == {"anything": {"goes": 1}}
    stored = custom(api).get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "pruned")
    assert "color" not in stored["spec"]


def test_strict_field_validation_refuses_unknown_fields(crontabs: str, ns: str, http_url: str,
                                                        tmp_path: Path) -> None:
    body = crontab("strict", cronSpec="1 2 3 4 5", colour="blue")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(body))
    refused = kubectl(http_url, tmp_path, "create", "-n", ns, "-f", str(tmp_path / "s.yaml"))
    assert refused.returncode != 0
    assert 'unknown field "spec.colour"' in refused.stderr


def test_status_and_spec_are_written_apart(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    objects = custom(api)
    created = objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs",
                                                      {**crontab("split", replicas=2), "status": {"phase": "x"}})
    assert "status" not in created  # create ignores status with the status subresource
    patched = objects.patch_namespaced_custom_object_status(GROUP, "v1", ns, "crontabs", "split",
                                                            {"status": {"phase": "Running"}, "spec": {"replicas": 9}})
    assert patched["status"] == {"phase": "Running"}
    assert patched["spec"]["replicas"] == 2  # /status ignores the spec
    assert patched["metadata"]["generation"] == 1  # and a status write is no new generation
    updated = objects.patch_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "split",
                                                     {"spec": {"replicas": 3}, "status": {"phase": "Gone"}})
    assert updated["spec"]["replicas"] == 3
    assert updated["status"] == {"phase": "Running"}  # the object's own writes ignore status
    assert updated["metadata"]["generation"] == 2


def test_merge_and_json_patch_work_and_strategic_is_refused(crontabs: str, ns: str, http_url: str,
                                                            tmp_path: Path, api: k8s.ApiClient) -> None:
    custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("patched"))
    merged = kubectl(http_url, tmp_path, "patch", "crontab", "patched", "-n", ns, "--type=merge",
                     "-p", '{"spec":{"replicas":4}}')
    assert merged.returncode == 0, merged.stderr
    jsoned = kubectl(http_url, tmp_path, "patch", "crontab", "patched", "-n", ns, "--type=json",
                     "-p", '[{"op":"replace","path":"/spec/image","value":"other"}]')
    assert jsoned.returncode == 0, jsoned.stderr
    strategic = kubectl(http_url, tmp_path, "patch", "crontab", "patched", "-n", ns, "--type=strategic",
                        "-p", '{"spec":{"replicas":5}}')
    assert strategic.returncode != 0
    assert "UnsupportedMediaType" in strategic.stderr or "unknown format" in strategic.stderr
    got = custom(api).get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "patched")
    assert got["spec"]["replicas"] == 4 and got["spec"]["image"] == "other"
    bad = kubectl(http_url, tmp_path, "patch", "crontab", "patched", "-n", ns, "--type=merge",
                  "-p", '{"spec":{"replicas":"many"}}')
    assert bad.returncode != 0 and "spec.replicas in body must be of type integer" in bad.stderr


def test_server_side_apply_owns_fields_and_conflicts(crontabs: str, ns: str, http_url: str,
                                                     tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(crontab("applied", cronSpec="1 * * * *", replicas=2)))
    first = kubectl(http_url, tmp_path, "apply", "--server-side", "--field-manager=alice", "-n", ns,
                    "-f", str(tmp_path / "a.yaml"))
    assert first.returncode == 0, first.stderr
    assert "serverside-applied" in first.stdout
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(crontab("applied", replicas=3)))
    clash = kubectl(http_url, tmp_path, "apply", "--server-side", "--field-manager=bob", "-n", ns,
                    "-f", str(tmp_path / "b.yaml"))
    assert clash.returncode != 0
    assert 'conflict with "alice"' in clash.stderr and ".spec.replicas" in clash.stderr
    forced = kubectl(http_url, tmp_path, "apply", "--server-side", "--force-conflicts", "--field-manager=bob",
                     "-n", ns, "-f", str(tmp_path / "b.yaml"))
    assert forced.returncode == 0, forced.stderr
    got = json.loads(kubectl(http_url, tmp_path, "get", "crontab", "applied", "-n", ns, "-o", "json",
                                  "--show-managed-fields").stdout)
    assert got["spec"]["replicas"] == 3 and got["spec"]["cronSpec"] == "1 * * * *"
    managers = {m["manager"]: m for m in got["metadata"]["managedFields"]}
    assert set(managers) == {"alice", "bob"}
    assert "f:replicas" in managers["bob"]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in managers["alice"]["fieldsV1"]["f:spec"]
    labelled = kubectl(http_url, tmp_path, "label", "crontab", "applied", "-n", ns, "tier=batch")
    assert labelled.returncode == 0, labelled.stderr
    got = json.loads(kubectl(http_url, tmp_path, "get", "crontab", "applied", "-n", ns, "-o", "json",
                                  "--show-managed-fields").stdout)
    assert any(m["manager"] == "kubectl-label" and m["operation"] == "Update"
               for m in got["metadata"]["managedFields"])


def test_scale_subresource(crontabs: str, ns: str, http_url: str, tmp_path: Path, api: k8s.ApiClient) -> None:
    custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("scaled", replicas=2))
    scaled = kubectl(http_url, tmp_path, "scale", "crontab", "scaled", "-n", ns, "--replicas=5")
    assert scaled.returncode == 0, scaled.stderr
    scale = custom(api).get_namespaced_custom_object_scale(GROUP, "v1", ns, "crontabs", "scaled")
    assert scale["spec"]["replicas"] == 5 and scale["kind"] == "Scale"


def test_watch_sees_changes(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    from kubernetes import watch
    objects = custom(api)
    listed = objects.list_namespaced_custom_object(GROUP, "v1", ns, "crontabs")
    objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("watched"))
    objects.patch_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "watched", {"spec": {"replicas": 7}})
    objects.delete_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "watched")
    seen = []
    raw = k8s.CustomObjectsApi(api)  # the watch reads the streamed answer itself
    for event in watch.Watch().stream(raw.list_namespaced_custom_object, GROUP, "v1", ns, "crontabs",
                                      resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=5):
        seen.append((event["type"], event["object"]["spec"]["replicas"]))
        if event["type"] == "DELETED":
            break
    assert seen == [("ADDED", 1), ("MODIFIED", 7), ("DELETED", 7)]


def test_selectors_and_cluster_wide_list(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    objects = custom(api)
    for name, tier in (("a", "web"), ("b", "db")):
        body = crontab(name)
        body["metadata"]["labels"] = {"tier": tier}
        objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", body)
    by_label = objects.list_namespaced_custom_object(GROUP, "v1", ns, "crontabs", label_selector="tier=db")
    assert [o["metadata"]["name"] for o in by_label["items"]] == ["b"]
    by_name = objects.list_cluster_custom_object(GROUP, "v1", "crontabs", field_selector="metadata.name=a")
    assert [(o["metadata"]["name"], o["metadata"]["namespace"]) for o in by_name["items"]] == [("a", ns)]
    deleted = objects.delete_collection_namespaced_custom_object(GROUP, "v1", ns, "crontabs",
                                                                 label_selector="tier=web")
    assert [o["metadata"]["name"] for o in deleted["items"]] == ["a"]
    left = objects.list_namespaced_custom_object(GROUP, "v1", ns, "crontabs")
    assert [o["metadata"]["name"] for o in left["items"]] == ["b"]


def test_oversized_object_is_refused(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    body = crontab("huge", extra={"blob": "x" * (2 * 1024 * 1024)})
    with pytest.raises(ApiException) as err:
        custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", body)
    assert err.value.status == 413
    assert "too large" in message(err.value)
    with pytest.raises(ApiException) as gone:
        custom(api).get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "huge")
    assert gone.value.status == 404


def test_deleting_a_namespace_deletes_its_custom_objects(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    objects = custom(api)
    objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("doomed"))
    k8s.CoreV1Api(api).delete_namespace(ns)

    def emptied() -> bool:
        left = objects.list_cluster_custom_object(GROUP, "v1", "crontabs", field_selector=f"metadata.namespace={ns}")
        return not left["items"]
    wait_for(emptied, "the namespace's CronTabs to be deleted")


def test_deeply_nested_object_is_refused(crontabs: str, ns: str, api: k8s.ApiClient) -> None:
    nested: dict[str, Any] = {}
    node = nested
    for _ in range(300):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ApiException) as err:
        custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("deep", extra=nested))
    assert err.value.status == 400 and "nested too deeply" in message(err.value)
    assert custom(api).list_namespaced_custom_object(GROUP, "v1", ns, "crontabs")["items"] == []


# ---------------------------------------------------------------- bad CRDs


def a_crd(plural: str, schema: dict[str, Any], group: str = "bad.example.com") -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "kind": plural.capitalize()},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}]}}


def test_non_structural_crd_is_refused(api: k8s.ApiClient, http_url: str, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"spec": {"properties": {"size": {"type": "integer"}}}}}
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(a_crd("widgets", schema)))
    refused = kubectl(http_url, tmp_path, "apply", "-f", str(tmp_path / "crd.yaml"))
    assert refused.returncode != 0
    assert ('spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for '
            'specified object fields') in refused.stderr
    with pytest.raises(ApiException) as err:
        k8s.ApiextensionsV1Api(api).read_custom_resource_definition("widgets.bad.example.com")
    assert err.value.status == 404


@pytest.mark.parametrize(("change", "expected"), [
    (lambda c: c["spec"].update(group="nodot"), "should be a domain with at least one dot"),
    (lambda c: c["metadata"].update(name="other.bad.example.com"), 'must be spec.names.plural+"."+spec.group'),
    (lambda c: c["spec"]["versions"][0].update(storage=False), "must have exactly one version marked as storage"),
    (lambda c: c["spec"]["versions"][0].pop("schema"), "schemas are required"),
])
def test_badly_named_or_versioned_crds_are_refused(api: k8s.ApiClient, change: Callable[[dict[str, Any]], None],
                                                    expected: str) -> None:
    crd = a_crd("gadgets", {"type": "object"})
    change(crd)
    with pytest.raises(ApiException) as err:
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    assert err.value.status == 422
    assert expected in message(err.value)


def test_a_schema_too_deep_to_serve_is_refused(api: k8s.ApiClient) -> None:
    node: dict[str, Any] = {"type": "object"}
    schema = {"type": "object", "properties": {"spec": node}}
    for _ in range(140):  # 280 levels of JSON: more than any answer could carry
        node["properties"] = {"a": {"type": "object"}}
        node = node["properties"]["a"]
    ext = k8s.ApiextensionsV1Api(api)
    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition(a_crd("deeps", schema))  # type: ignore[arg-type]
    assert err.value.status == 422
    assert "spec.versions[0].schema.openAPIV3Schema: nested too deeply: more than 200 levels" in message(err.value)
    assert ext.list_custom_resource_definition().items is not None  # the list still answers


# ---------------------------------------------------------------- cluster scope, versions, deletion


def test_conflicting_names_are_not_accepted(api: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    first = a_crd("gizmos", {"type": "object"}, "names.example.com")
    second = a_crd("gizmoes", {"type": "object"}, "names.example.com")
    second["spec"]["names"].update(kind="Gizmos", singular="gizmoe")  # the first one's kind
    ext.create_custom_resource_definition(first)  # type: ignore[arg-type]
    wait_for(lambda: established(ext, "gizmos.names.example.com"), "the first CRD to be Established")
    ext.create_custom_resource_definition(second)  # type: ignore[arg-type]

    def refused() -> dict[str, str]:
        status = ext.read_custom_resource_definition("gizmoes.names.example.com").status
        return {c.type: f"{c.status} {c.message}" for c in (status.conditions or [])} if status else {}
    conditions = wait_for(refused, "the second CRD's conditions")
    assert conditions["NamesAccepted"] == 'False "Gizmos" is already in use'
    assert conditions["Established"].startswith("False")
    with pytest.raises(ApiException) as err:
        custom(api).list_cluster_custom_object("names.example.com", "v1", "gizmoes")
    assert err.value.status == 404
    for name in ("gizmoes.names.example.com", "gizmos.names.example.com"):
        ext.delete_custom_resource_definition(name)


def test_a_stored_version_cannot_be_dropped_and_a_deprecated_one_warns(api: k8s.ApiClient, http_url: str,
                                                                       tmp_path: Path) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    crd = a_crd("relics", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "old.example.com")
    crd["spec"]["versions"][0].update(deprecated=True, deprecationWarning="old.example.com/v1 Relic is going")
    ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]
    wait_for(lambda: established(ext, "relics.old.example.com"), "the CRD to be Established")
    body = {"apiVersion": "old.example.com/v1", "kind": "Relics", "metadata": {"name": "r"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(body))
    created = kubectl(http_url, tmp_path, "create", "-n", "default", "-f", str(tmp_path / "r.yaml"))
    assert created.returncode == 0, created.stderr
    assert "Warning: old.example.com/v1 Relic is going" in created.stderr
    stored = ext.read_custom_resource_definition("relics.old.example.com")
    assert stored.status is not None and stored.status.stored_versions == ["v1"]
    renamed = json.loads(json.dumps(crd))
    renamed["spec"]["versions"][0]["name"] = "v2"
    renamed["metadata"]["resourceVersion"] = stored.metadata.resource_version if stored.metadata else ""
    with pytest.raises(ApiException) as err:
        ext.replace_custom_resource_definition("relics.old.example.com", renamed)
    assert err.value.status == 422
    assert 'status.storedVersions[0]: Invalid value: "v1": must appear in spec.versions' in message(err.value)
    ext.delete_custom_resource_definition("relics.old.example.com")


def test_cluster_scoped_two_versions_and_deleting_the_crd_deletes_objects(api: k8s.ApiClient, http_url: str,
                                                                          tmp_path: Path) -> None:
    group = "multi.example.com"
    crd = a_crd("backups", {"type": "object", "properties": {"spec": {"type": "object",
                                                                      "x-kubernetes-preserve-unknown-fields": True}}},
                group)
    crd["spec"]["scope"] = "Cluster"
    v1beta1 = json.loads(json.dumps(crd["spec"]["versions"][0]))
    v1beta1.update(name="v1beta1", storage=False)
    crd["spec"]["versions"].append(v1beta1)
    ext = k8s.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]
    wait_for(lambda: established(ext, crd["metadata"]["name"]), "the CRD to be Established")
    objects = custom(api)
    body = {"apiVersion": f"{group}/v1beta1", "kind": "Backups", "metadata": {"name": "nightly"},
            "spec": {"at": "02:00"}}
    objects.create_cluster_custom_object(group, "v1beta1", "backups", body)
    as_v1 = objects.get_cluster_custom_object(group, "v1", "backups", "nightly")
    assert as_v1["apiVersion"] == f"{group}/v1" and as_v1["spec"] == {"at": "02:00"}  # conversion None
    discovery = kubectl(http_url, tmp_path, "get", "--raw", f"/apis/{group}")
    assert json.loads(discovery.stdout)["preferredVersion"]["version"] == "v1"

    ext.delete_custom_resource_definition(crd["metadata"]["name"])

    def gone() -> bool:
        try:
            ext.read_custom_resource_definition(crd["metadata"]["name"])
        except ApiException as err:
            return err.status == 404
        return False
    wait_for(gone, "the CRD and its objects to be deleted")
    served = kubectl(http_url, tmp_path, "get", "--raw", f"/apis/{group}/v1/backups")
    assert served.returncode != 0  # no longer served, discovered, nor described
    assert group not in kubectl(http_url, tmp_path, "get", "--raw", "/apis").stdout
    assert f"apis/{group}/v1" not in kubectl(http_url, tmp_path, "get", "--raw", "/openapi/v3").stdout
    # Recreated, it starts empty: the old objects went with the old CRD.
    ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]
    wait_for(lambda: established(ext, crd["metadata"]["name"]), "the CRD to be Established again")
    assert objects.list_cluster_custom_object(group, "v1", "backups")["items"] == []
    ext.delete_custom_resource_definition(crd["metadata"]["name"])


# ---------------------------------------------------------------- kopf

OPERATOR = '''
import kopf


@kopf.on.create("stable.example.com", "v1", "crontabs")
def created(spec, patch, **_):
    patch.status["phase"] = "Scheduled"
    patch.status["replicas"] = spec.get("replicas", 0)


@kopf.on.delete("stable.example.com", "v1", "crontabs")
def deleted(name, namespace, **_):
    import kubernetes
    kubernetes.config.load_kube_config()
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, {
        "metadata": {"name": f"deleted-{name}"}})
'''


def test_kopf_reconciles_a_custom_resource_and_sees_it_deleted(crontabs: str, ns: str, api: k8s.ApiClient,
                                                               http_url: str, tmp_path: Path) -> None:
    (tmp_path / "operator.py").write_text(OPERATOR)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: flotilla\n"
        f"clusters: [{{name: flotilla, cluster: {{server: '{http_url}'}}}}]\n"
        "users: [{name: admin, user: {}}]\n"
        "contexts: [{name: flotilla, context: {cluster: flotilla, user: admin}}]\n")
    log = tmp_path / "kopf.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", ns,
                                    "operator.py"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                   env={"KUBECONFIG": str(tmp_path / "kubeconfig"), "PATH": "/usr/bin:/bin",
                                        "HOME": str(tmp_path)})
    objects = custom(api)
    try:
        objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("reconciled", replicas=3))

        def reconciled() -> bool:
            status = objects.get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "reconciled").get("status")
            return status == {"phase": "Scheduled", "replicas": 3}
        wait_for(reconciled, f"kopf to write the status: {log.read_text(errors='replace')[-2000:]}", timeout=40)
        got = objects.get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "reconciled")
        assert "kopf.zalando.org/KopfFinalizerMarker" in got["metadata"].get("finalizers", [])
        objects.delete_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "reconciled")

        def noticed() -> bool:
            try:
                k8s.CoreV1Api(api).read_namespaced_config_map("deleted-reconciled", ns)
            except ApiException:
                return False
            return True
        wait_for(noticed, f"kopf to see the deletion: {log.read_text(errors='replace')[-2000:]}", timeout=40)

        def gone() -> bool:
            try:
                objects.get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "reconciled")
            except ApiException as err:
                return err.status == 404
            return False
        wait_for(gone, "the object to go once kopf released it")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_openapi_and_explain_know_the_custom_kind(crontabs: str, http_url: str, tmp_path: Path) -> None:
    index = kubectl(http_url, tmp_path, "get", "--raw", "/openapi/v3")
    assert f"apis/{GROUP}/v1" in json.loads(index.stdout)["paths"]
    document = json.loads(kubectl(http_url, tmp_path, "get", "--raw", f"/openapi/v3/apis/{GROUP}/v1").stdout)
    schema = document["components"]["schemas"]["com.example.stable.v1.CronTab"]
    assert schema["properties"]["spec"]["properties"]["replicas"]["maximum"] == 10
    assert f"/apis/{GROUP}/v1/namespaces/{{namespace}}/crontabs/{{name}}/status" in document["paths"]
    v2 = json.loads(kubectl(http_url, tmp_path, "get", "--raw", "/openapi/v2").stdout)
    assert "com.example.stable.v1.CronTabList" in v2["definitions"]
    explained = kubectl(http_url, tmp_path, "explain", "crontab.spec")
    assert explained.returncode == 0, explained.stderr
    assert "cronSpec" in explained.stdout and "replicas" in explained.stdout
