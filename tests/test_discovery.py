"""Discovery tells kubectl everything the kinds table serves, in the shapes kubectl reads.

Given the one kinds table, when kubectl asks /api, /apis and each group version (or
the aggregated documents instead), then every kind is there with its verbs, short
names, categories and subresources, and `deployments/scale` answers with an
autoscaling/v1 Scale, as `kubectl scale` expects. The last tests ask real kubectl
1.32 against the test apiserver's HTTP listener.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controlplane.apiserver.http import discovery
from proto import kinds


def _legacy_entries() -> dict[tuple[str, str], dict[str, Any]]:
    """(groupVersion, name) -> APIResource, read the way kubectl without aggregation does."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    group_versions = list(discovery.api_versions()["versions"])
    for group in discovery.api_group_list()["groups"]:
        group_versions += [gv["groupVersion"] for gv in group["versions"]]
    for gv in group_versions:
        group, _, version = gv.rpartition("/")
        listing = discovery.api_resource_list(group, version)
        assert listing is not None, gv
        assert listing["groupVersion"] == gv
        found.update({(gv, r["name"]): r for r in listing["resources"]})
    return found


def _aggregated_entries() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for legacy in (True, False):
        doc = discovery.aggregated(legacy)
        assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
        for group in doc["items"]:
            name = group["metadata"]["name"]
            assert (name == "") == legacy  # /api holds the core group only, /apis every other
            for version in group["versions"]:
                assert version["freshness"] == "Current"
                gv = f"{name}/{version['version']}" if name else version["version"]
                found.update({(gv, r["resource"]): r for r in version["resources"]})
    return found


@pytest.mark.parametrize("kind", kinds.SERVED, ids=lambda k: f"{k.api_version}/{k.http_resource}")
def test_every_kind_is_listed_with_its_names_verbs_and_categories(kind: kinds.Kind) -> None:
    entry = _legacy_entries()[(kind.api_version, kind.http_resource)]
    assert entry["kind"] == kind.kind
    assert entry["singularName"] == kind.singular
    assert entry["namespaced"] == kind.namespaced
    assert entry["verbs"] == list(kind.verbs)
    assert entry.get("shortNames", []) == list(kind.short_names)
    assert entry.get("categories", []) == list(kind.categories)

    aggregated = _aggregated_entries()[(kind.api_version, kind.http_resource)]
    assert aggregated["responseKind"] == {"group": kind.group, "version": kind.version, "kind": kind.kind}
    assert aggregated["scope"] == ("Namespaced" if kind.namespaced else "Cluster")
    assert aggregated["verbs"] == list(kind.verbs)
    assert aggregated.get("shortNames", []) == list(kind.short_names)
    assert aggregated.get("categories", []) == list(kind.categories)
    assert [s["subresource"] for s in aggregated.get("subresources", [])] == [s.name for s in kind.subresources]


def test_nothing_is_listed_that_the_table_does_not_serve() -> None:
    served = {(k.api_version, k.http_resource) for k in kinds.SERVED}
    assert {key for key in _legacy_entries() if "/" not in key[1]} == served
    assert set(_aggregated_entries()) == served


def test_kubectl_visible_details() -> None:
    legacy = _legacy_entries()
    scale = legacy[("apps/v1", "deployments/scale")]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert scale["verbs"] == ["get", "patch", "update"]
    assert legacy[("apps/v1", "replicasets/scale")]["kind"] == "Scale"
    eviction = legacy[("v1", "pods/eviction")]
    assert (eviction["group"], eviction["version"], eviction["kind"], eviction["verbs"]) == (
        "policy", "v1", "Eviction", ["create"])
    assert legacy[("v1", "pods/log")]["kind"] == "Pod" and "group" not in legacy[("v1", "pods/log")]
    assert legacy[("v1", "pods/exec")]["verbs"] == ["create", "get"]
    assert legacy[("v1", "pods/status")]["verbs"] == ["get", "patch", "update"]
    assert ("v1", "configmaps/status") not in legacy  # only kinds with a status have one
    assert "deletecollection" not in legacy[("v1", "namespaces")]["verbs"]  # as in Kubernetes
    # Kubernetes' own hash for apps/v1 Deployment: clients compare it across servers.
    assert legacy[("apps/v1", "deployments")]["storageVersionHash"] == "8aSe+NMegvE="
    assert "storageVersionHash" not in legacy[("metrics.k8s.io/v1beta1", "pods")]  # not stored

    # `kubectl get all` lists exactly the `all` category, as Kubernetes puts it.
    assert {r for (_, r), e in legacy.items() if "all" in e.get("categories", [])} == {
        "pods", "services", "deployments", "replicasets", "daemonsets", "statefulsets", "horizontalpodautoscalers",
        "jobs", "cronjobs"}

    # `kubectl top` reads pods and nodes of metrics.k8s.io; only get and list.
    assert legacy[("metrics.k8s.io/v1beta1", "pods")]["kind"] == "PodMetrics"
    assert legacy[("metrics.k8s.io/v1beta1", "nodes")]["verbs"] == ["get", "list"]

    # `kubectl auth can-i` and `auth whoami` POST these: create only, cluster-scoped.
    review = legacy[("authorization.k8s.io/v1", "selfsubjectaccessreviews")]
    assert (review["verbs"], review["namespaced"]) == (["create"], False)
    assert ("authentication.k8s.io/v1", "selfsubjectreviews") in legacy


def test_aggregated_subresources_carry_their_response_kind() -> None:
    deployments = _aggregated_entries()[("apps/v1", "deployments")]
    subresources = {s["subresource"]: s for s in deployments["subresources"]}
    assert subresources["scale"]["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert subresources["status"]["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    pods = {s["subresource"]: s for s in _aggregated_entries()[("v1", "pods")]["subresources"]}
    assert pods["log"]["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["eviction"]["responseKind"]["group"] == "policy"


def test_group_list_and_core_versions() -> None:
    assert discovery.api_versions()["kind"] == "APIVersions"
    assert discovery.api_versions()["versions"] == ["v1"]
    groups = {g["name"]: g for g in discovery.api_group_list()["groups"]}
    assert "" not in groups
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert groups["metrics.k8s.io"]["versions"] == [{"groupVersion": "metrics.k8s.io/v1beta1",
                                                       "version": "v1beta1"}]
    # metrics.k8s.io comes last, so plain `pods` and `nodes` stay the core kinds.
    assert list(groups)[-1] == "metrics.k8s.io"
    assert [i["metadata"]["name"] for i in discovery.aggregated(False)["items"]] == list(groups)


def test_resolve_maps_a_path_back_to_its_kind() -> None:
    assert discovery.resolve("apps", "v1", "deployments") is kinds.resolve("deployments")
    assert discovery.resolve("", "v1", "pods") is kinds.resolve("pods")
    assert discovery.resolve("metrics.k8s.io", "v1beta1", "pods") is kinds.resolve("podmetrics")
    assert discovery.resolve("authorization.k8s.io", "v1", "selfsubjectaccessreviews") is kinds.review(
        "authorization.k8s.io/v1", "SelfSubjectAccessReview")
    assert discovery.resolve("apps", "v2", "deployments") is None
    assert discovery.resolve("", "v1", "podmetrics") is None  # the registry's name is not a URL
    assert discovery.resolve("", "v1", "deployments") is None
    assert discovery.api_resource_list("apps", "v2") is None
    assert discovery.api_resource_list("nosuch.example.com", "v1") is None


def test_documents_are_computed_once() -> None:
    assert discovery.aggregated(False) is discovery.aggregated(False)
    assert discovery.api_resource_list("", "v1") is discovery.api_resource_list("", "v1")
    assert discovery.AGGREGATED_CONTENT_TYPE == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")


# ---------------------------------------------------------------- real kubectl

KUBECTL = "/usr/bin/kubectl"


def run_kubectl(http_url: str, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl 1.32 against the test apiserver's plaintext listener (the caller is the local admin)."""
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed on this machine")
    config = cache / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\n")
    return subprocess.run([KUBECTL, "--kubeconfig", str(config), "--server", http_url, "--cache-dir",
                           str(cache / "cache"), *args], capture_output=True, text=True, timeout=60)


def test_kubectl_api_resources_prints_the_kinds_table(http_url: str, tmp_path: Path) -> None:
    result = run_kubectl(http_url, tmp_path, "api-resources", "--no-headers", "-o", "wide")
    assert result.returncode == 0, result.stderr
    printed = set()
    for line in result.stdout.splitlines():
        columns = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS [CATEGORIES]: SHORTNAMES may be blank.
        at = next(i for i, c in enumerate(columns) if c in ("true", "false"))
        name, short, api_version = columns[0], columns[1:at - 1], columns[at - 1]
        printed.add((name, ",".join(short), api_version, columns[at] == "true", columns[at + 1], columns[at + 2],
                     columns[at + 3] if len(columns) > at + 3 else ""))
    # Custom resources other tests' CRDs serve are listed too; their groups are never a built-in one.
    built_in = {k.api_version for k in kinds.SERVED}
    printed = {row for row in printed if row[2] in built_in}
    assert printed == {(k.http_resource, ",".join(k.short_names), k.api_version, k.namespaced, k.kind,
                        ",".join(k.verbs), ",".join(k.categories)) for k in kinds.SERVED}


def test_kubectl_get_all_means_the_all_category(http_url: str, tmp_path: Path) -> None:
    result = run_kubectl(http_url, tmp_path, "api-resources", "--categories=all", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"pods", "services", "deployments.apps", "replicasets.apps",
                                          "daemonsets.apps", "statefulsets.apps",
                                          "horizontalpodautoscalers.autoscaling", "jobs.batch",
                                          "cronjobs.batch"}
