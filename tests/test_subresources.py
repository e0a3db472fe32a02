"""Scale, eviction and the reviews: the pure functions the HTTP API's subresources stand on.

Stories: given a Deployment, when kubectl scales it through its Scale, then only its
replicas change; given `kubectl drain`'s Eviction, its DeleteOptions come out checked;
given the default RBAC policy and a user bound to `view` in one namespace, `kubectl
auth can-i` answers as the next request would be treated, and only reviewers may ask
about someone else. The last tests run real kubectl 1.32 against the test apiserver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client import Client
from controlplane.apiserver.auth import AUTHENTICATED, MASTERS, AlwaysAllow, UserInfo
from controlplane.apiserver.rbac import RBACAuthorizer, default_cluster_role_bindings, default_cluster_roles
from controlplane.apiserver.subresources import eviction, reviews, scale
from proto import apps_pb2, kinds, manifest, rbac_pb2, wire
from proto.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from tests.test_discovery import run_kubectl
from tests.test_wire import SELF_SUBJECT_ACCESS_REVIEW, SELF_SUBJECT_REVIEW

DEPLOYMENTS = kinds.resolve("deployments")


def web_deployment() -> apps_pb2.Deployment:
    dep = manifest.from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-web", "resourceVersion": "41",
                     "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"replicas": 2,
                 "selector": {"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "api"]},
                                                   {"key": "canary", "operator": "DoesNotExist"}]},
                 "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}})
    assert isinstance(dep, apps_pb2.Deployment)
    return dep


# ---------------------------------------------------------------- scale


def test_a_deployment_seen_as_a_scale() -> None:
    assert scale.scalable(DEPLOYMENTS) and scale.scalable(kinds.resolve("replicasets"))
    assert not scale.scalable(kinds.resolve("pods"))
    assert scale.to_scale(DEPLOYMENTS, web_deployment()) == {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-web", "resourceVersion": "41",
                     "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"replicas": 2},
        # Kubernetes' rendering: requirements sorted by key, set values sorted.
        "status": {"replicas": 2, "selector": "app=web,!canary,tier in (api,front)"}}


def test_kubectl_scale_round_trip_changes_only_replicas() -> None:
    dep = web_deployment()
    patched = scale.to_scale(DEPLOYMENTS, dep)
    patched["spec"] = {"replicas": 3}  # what `kubectl scale --replicas=3`'s merge patch leaves
    scaled = scale.apply_scale(DEPLOYMENTS, dep, patched)
    assert isinstance(scaled, apps_pb2.Deployment)
    assert scaled.spec.replicas == 3
    assert scaled.metadata.resource_version == "41"  # the update's precondition
    expected = web_deployment()
    expected.spec.replicas = 3
    assert scaled == expected
    assert dep.spec.replicas == 2  # the stored object was not touched
    assert scale.to_scale(DEPLOYMENTS, scaled)["spec"] == {"replicas": 3}


def test_a_scale_to_zero_is_a_scale() -> None:
    scaled = scale.apply_scale(DEPLOYMENTS, web_deployment(), {"spec": {"replicas": 0}})
    assert scaled.spec.replicas == 0  # type: ignore[attr-defined]
    assert scale.to_scale(DEPLOYMENTS, scaled)["spec"] == {"replicas": 0}


def test_a_stale_scale_carries_its_resource_version_to_the_update() -> None:
    scaled = scale.apply_scale(DEPLOYMENTS, web_deployment(),
                               {"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {"replicas": 5}})
    assert scaled.metadata.resource_version == "7"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "error", "text"), [
    ({"spec": {"replicas": -1}}, Invalid, "spec.replicas: Invalid value: -1"),
    ({"metadata": {"name": "other"}, "spec": {"replicas": 1}}, BadRequest, "does not match the name on the URL"),
    ({"metadata": {"namespace": "kube-system"}, "spec": {"replicas": 1}}, BadRequest, "namespace"),
    ({"metadata": {"uid": "someone-else"}, "spec": {"replicas": 1}}, Conflict, "Precondition failed: UID"),
    ({"spec": {"replicas": 1, "paused": True}}, Invalid, "paused"),
    ({"spec": {"replicas": "three"}}, Invalid, "spec.replicas"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}}, BadRequest, "autoscaling/v1 Scale"),
    (["not", "an", "object"], BadRequest, "JSON object"),
], ids=["negative", "other-name", "other-namespace", "other-uid", "unknown-field", "not-a-number", "wrong-kind",
        "not-an-object"])
def test_a_bad_scale_is_refused_with_a_clear_error(body: Any, error: type[Exception], text: str) -> None:
    dep = web_deployment()
    with pytest.raises(error, match=text):
        scale.apply_scale(DEPLOYMENTS, dep, body)
    assert dep == web_deployment()


def test_an_unscalable_kind_has_no_scale() -> None:
    configmaps = kinds.resolve("configmaps")
    with pytest.raises(NotFound):
        scale.to_scale(configmaps, configmaps.message())
    with pytest.raises(NotFound):
        scale.apply_scale(configmaps, configmaps.message(), {"spec": {"replicas": 1}})


# ---------------------------------------------------------------- eviction

# Y_drain_node1___ignore_daemonset.req.txt: exactly what `kubectl drain` POSTs.
DRAIN_EVICTION = {"kind": "Eviction", "apiVersion": "policy/v1",
                  "metadata": {"name": "nginx", "namespace": "default", "creationTimestamp": None},
                  "deleteOptions": {}}


def test_kubectl_drains_eviction_gives_default_delete_options() -> None:
    assert eviction.delete_options(DRAIN_EVICTION, name="nginx", namespace="default") == {}


def test_an_evictions_delete_options_come_out_checked() -> None:
    body = {**DRAIN_EVICTION, "apiVersion": "policy/v1beta1",
            "deleteOptions": {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": "u1"}, "propagationPolicy": "Background",
                              "dryRun": ["All"]}}
    assert eviction.delete_options(body, name="nginx", namespace="default") == {
        "gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}, "propagationPolicy": "Background",
        "dryRun": ["All"]}


@pytest.mark.parametrize(("body", "error", "text"), [
    ({**DRAIN_EVICTION, "metadata": {"name": "other"}}, BadRequest, "name in URL does not match"),
    ({**DRAIN_EVICTION, "metadata": {"name": "nginx", "namespace": "prod"}}, BadRequest, "namespace"),
    ({**DRAIN_EVICTION, "kind": "Pod"}, BadRequest, "expected an Eviction"),
    ({**DRAIN_EVICTION, "apiVersion": "v1"}, BadRequest, "expected an Eviction"),
    ({**DRAIN_EVICTION, "deleteOptions": {"propagationPolicy": "Sideways"}}, Invalid,
     'propagationPolicy: Unsupported value: "Sideways"'),
    ({**DRAIN_EVICTION, "deleteOptions": {"gracePeriodSeconds": -5}}, Invalid, "gracePeriodSeconds"),
    ({**DRAIN_EVICTION, "deleteOptions": {"dryRun": ["Some"]}}, Invalid, "dryRun"),
    ({**DRAIN_EVICTION, "deleteOptions": {"orphanDependents": True, "propagationPolicy": "Orphan"}}, Invalid,
     "cannot be both set"),
    ({**DRAIN_EVICTION, "deleteOptions": {"force": True}}, Invalid, "force"),
    ({**DRAIN_EVICTION, "spec": {}}, Invalid, "spec"),
], ids=["other-name", "other-namespace", "not-eviction", "wrong-version", "bad-propagation", "negative-grace",
        "bad-dry-run", "orphan-and-policy", "unknown-option", "unknown-field"])
def test_a_bad_eviction_is_refused_with_a_clear_error(body: dict, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        eviction.delete_options(body, name="nginx", namespace="default")


def test_an_eviction_without_a_namespace_takes_the_urls() -> None:
    body = {**DRAIN_EVICTION, "metadata": {"name": "nginx"}}
    assert eviction.delete_options(body, name="nginx", namespace="default") == {}


# ---------------------------------------------------------------- access reviews

ADMIN = UserInfo("kubernetes-admin", (MASTERS, AUTHENTICATED))
ALICE = UserInfo("alice", (AUTHENTICATED,))
BOB = UserInfo("bob", (AUTHENTICATED,))


@pytest.fixture
def authorizer() -> RBACAuthorizer:
    """The default policy, plus alice bound to the `view` ClusterRole in namespace team."""
    rbac = RBACAuthorizer()
    for obj in (*default_cluster_roles(), *default_cluster_role_bindings()):
        rbac.observe("ADDED", obj)
    binding = rbac_pb2.RoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding")
    binding.metadata.name, binding.metadata.namespace = "alice-view", "team"
    binding.subjects.add(kind="User", name="alice", api_group="rbac.authorization.k8s.io")
    binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
        "rbac.authorization.k8s.io", "ClusterRole", "view")
    rbac.observe("ADDED", binding)
    return rbac


def can_i(verb: str, resource: str, namespace: str = "", group: str = "", **more: str) -> dict[str, Any]:
    attrs = {"verb": verb, "resource": resource, **more}
    if namespace:
        attrs["namespace"] = namespace
    if group:
        attrs["group"] = group
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}


@pytest.mark.parametrize(("user", "review", "allowed"), [
    (ADMIN, can_i("delete", "nodes"), True),
    (ALICE, can_i("get", "pods", "team"), True),
    (ALICE, can_i("list", "deployments", "team", "apps"), True),
    (ALICE, can_i("get", "pods", "team", subresource="log"), True),
    (ALICE, can_i("get", "pods", "default"), False),  # her binding is in team only
    (ALICE, can_i("delete", "pods", "team"), False),  # view reads
    (ALICE, can_i("get", "secrets", "team"), False),  # view skips secrets, as in Kubernetes
    (ALICE, can_i("get", "nodes", "team"), False),  # cluster-scoped: a RoleBinding cannot grant it
    (ALICE, can_i("list", "pods", "team", "metrics.k8s.io"), True),  # `kubectl top pod` (PodMetrics)
    (BOB, can_i("get", "pods", "team"), False),
], ids=["admin-delete-nodes", "alice-get-pods", "alice-list-deployments", "alice-logs", "alice-other-namespace",
        "alice-delete", "alice-secrets", "alice-nodes", "alice-top", "bob-nothing"])
def test_can_i_answers_as_the_request_would_be_treated(authorizer: RBACAuthorizer, user: UserInfo,
                                                       review: dict, allowed: bool) -> None:
    answer = reviews.self_subject_access_review(authorizer, user, review)
    assert answer["status"] == {"allowed": allowed}  # RBAC gives no reason: kubectl prints a bare yes or no
    assert answer["spec"] == review["spec"]
    assert (answer["kind"], answer["apiVersion"]) == ("SelfSubjectAccessReview", "authorization.k8s.io/v1")


def test_kubectls_own_can_i_body_is_answered(authorizer: RBACAuthorizer) -> None:
    body = wire.decode(SELF_SUBJECT_ACCESS_REVIEW)  # `kubectl auth can-i get pods` in namespace default
    assert reviews.self_subject_access_review(authorizer, ADMIN, body)["status"] == {"allowed": True}
    assert reviews.self_subject_access_review(authorizer, ALICE, body)["status"] == {"allowed": False}


@pytest.mark.parametrize(("user", "path", "allowed"), [
    (ALICE, "/version", True), (ALICE, "/apis/apps", True), (ALICE, "/metrics", False), (ADMIN, "/metrics", True)])
def test_non_resource_paths(authorizer: RBACAuthorizer, user: UserInfo, path: str, allowed: bool) -> None:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"nonResourceAttributes": {"path": path, "verb": "get"}}}
    assert reviews.self_subject_access_review(authorizer, user, body)["status"] == {"allowed": allowed}


@pytest.mark.parametrize("spec", [
    {},
    {"resourceAttributes": {"verb": "get", "resource": "pods"}, "nonResourceAttributes": {"path": "/", "verb": "get"}},
], ids=["neither", "both"])
def test_a_review_asks_exactly_one_question(authorizer: RBACAuthorizer, spec: dict) -> None:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}
    with pytest.raises(Invalid, match="exactly one of nonResourceAttributes or resourceAttributes"):
        reviews.self_subject_access_review(authorizer, ALICE, body)


@pytest.mark.parametrize("body", [
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {}},
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"user": "bob"}},
    "get pods",
], ids=["wrong-kind", "user-in-self-review", "not-an-object"])
def test_a_malformed_review_is_refused(authorizer: RBACAuthorizer, body: Any) -> None:
    with pytest.raises(BadRequest):
        reviews.self_subject_access_review(authorizer, ALICE, body)


def subject_review(user: str, verb: str, resource: str, namespace: str, groups: tuple[str, ...] = ()) -> dict:
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": list(groups),
                     "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}}}


def test_only_reviewers_ask_about_someone_else(authorizer: RBACAuthorizer) -> None:
    about_alice = subject_review("alice", "get", "pods", "team")
    assert reviews.subject_access_review(authorizer, ADMIN, about_alice)["status"] == {"allowed": True}
    assert reviews.subject_access_review(authorizer, ADMIN, subject_review("alice", "get", "pods", "default"))[
        "status"] == {"allowed": False}
    # The question is about the user and groups named, not the caller's.
    assert reviews.subject_access_review(authorizer, ADMIN, subject_review("carol", "delete", "nodes", "",
                                                                          (MASTERS,)))["status"] == {"allowed": True}
    # Alice may ask about herself, but not about bob.
    assert reviews.subject_access_review(authorizer, ALICE, about_alice)["status"] == {"allowed": True}
    with pytest.raises(Forbidden, match='cannot create resource "subjectaccessreviews"'):
        reviews.subject_access_review(authorizer, ALICE, subject_review("bob", "get", "pods", "team"))
    with pytest.raises(Invalid, match="at least one of user or group"):
        reviews.subject_access_review(authorizer, ADMIN, subject_review("", "get", "pods", "team"))


def test_rules_review_lists_what_the_caller_holds(authorizer: RBACAuthorizer) -> None:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "team"}}
    status = reviews.self_subject_rules_review(authorizer, ALICE, body)["status"]
    assert status["incomplete"] is False
    assert any("pods" in r["resources"] and r["verbs"] == ["get", "list", "watch"] for r in status["resourceRules"])
    assert not any("delete" in r["verbs"] for r in status["resourceRules"])
    elsewhere = reviews.self_subject_rules_review(authorizer, ALICE, {**body, "spec": {"namespace": "default"}})
    assert not any("pods" in r["resources"] for r in elsewhere["status"]["resourceRules"])
    unlisted = reviews.self_subject_rules_review(AlwaysAllow(), ALICE, body)["status"]
    assert unlisted["incomplete"] is True and unlisted["evaluationError"]


# ---------------------------------------------------------------- identity reviews


def test_whoami_names_the_caller() -> None:
    assert wire.decode(SELF_SUBJECT_REVIEW)["kind"] == "SelfSubjectReview"  # what kubectl sends carries nothing
    assert reviews.self_subject_review(ALICE) == {
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": {"username": "alice", "groups": ["system:authenticated"]}}}


def test_token_review_answers_without_echoing_the_token() -> None:
    tokens = {"s3cret": BOB}

    def lookup(token: str, _audiences: tuple[str, ...]) -> UserInfo | None:
        return tokens.get(token)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "s3cret"}}
    answer = reviews.token_review(lookup, body)
    assert answer["status"] == {"authenticated": True,
                                "user": {"username": "bob", "groups": ["system:authenticated"]}}
    assert "s3cret" not in repr(answer)
    unknown = reviews.token_review(lookup, {**body, "spec": {"token": "guess"}})
    assert unknown["status"] == {"authenticated": False}
    with pytest.raises(Invalid, match=r"spec\.token: Required value"):
        reviews.token_review(lookup, {**body, "spec": {}})


# ---------------------------------------------------------------- real kubectl


async def test_kubectl_scale_changes_the_deployments_replicas(client: Client, namespace: str, http_url: str,
                                                              tmp_path: Path) -> None:
    dep = web_deployment()
    dep.metadata.namespace = namespace
    dep.metadata.ClearField("uid")
    dep.metadata.ClearField("resource_version")
    dep.metadata.ClearField("creation_timestamp")
    dep.ClearField("status")
    await client.create(dep)
    result = run_kubectl(http_url, tmp_path, "scale", "-n", namespace, "deployment", "web", "--replicas=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deployment.apps/web scaled"
    assert (await client.get(apps_pb2.Deployment, "web", namespace)).spec.replicas == 3
    # --current-replicas is a precondition kubectl checks against the Scale it reads.
    stale = run_kubectl(http_url, tmp_path, "scale", "-n", namespace, "deployment/web", "--current-replicas=2",
                        "--replicas=5")
    assert stale.returncode == 1 and "Expected replicas to be 2, was 3" in stale.stderr
    assert (await client.get(apps_pb2.Deployment, "web", namespace)).spec.replicas == 3


def test_kubectl_auth_can_i_and_whoami(http_url: str, tmp_path: Path) -> None:
    # The plaintext listener's caller is the local admin (system:masters).
    can_i = run_kubectl(http_url, tmp_path, "auth", "can-i", "get", "pods")
    assert (can_i.returncode, can_i.stdout.strip()) == (0, "yes"), can_i.stderr
    top = run_kubectl(http_url, tmp_path, "auth", "can-i", "list", "pods.metrics.k8s.io", "-A")
    assert top.stdout.strip() == "yes", top.stderr
    unknown = run_kubectl(http_url, tmp_path, "auth", "can-i", "get", "frobnitzes")
    assert "the server doesn't have a resource type" in unknown.stderr  # kubectl resolves it from discovery
    whoami = run_kubectl(http_url, tmp_path, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert '"kind": "SelfSubjectReview"' in whoami.stdout and "system:masters" in whoami.stdout
