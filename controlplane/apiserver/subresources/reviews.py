"""Access and identity reviews: questions answered by the apiserver's own authoriser and authenticator.

`kubectl auth can-i get pods` POSTs a SelfSubjectAccessReview and prints yes or no;
`kubectl auth can-i --list` a SelfSubjectRulesReview; `kubectl auth whoami` a
SelfSubjectReview. A SubjectAccessReview asks about someone else, and a TokenReview
asks whom a bearer token names (webhooks and add-ons do both). None is stored: the
request comes back with its status filled in (201 Created, as kube-apiserver answers).

The answers come from the same authoriser that guards every request (RBAC,
controlplane/apiserver/rbac.py), with the same Attributes, so `can-i` never disagrees
with what the next request meets. A resource is named as in a URL (`pods` in group
`metrics.k8s.io` is PodMetrics) and checked under the name RBAC rules use.

Asking about another user takes `create subjectaccessreviews` (authorization.k8s.io),
as the gRPC ReviewAccess call does; asking about oneself through a
SubjectAccessReview does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver.auth import AUTHENTICATED, MASTERS, Attributes, Authorizer, UserInfo
from proto import kinds, manifest, rbac_pb2
from proto.errors import ApiError, BadRequest, Forbidden, Invalid

AUTHORIZATION = "authorization.k8s.io"
# What Kubernetes' system:discovery and system:public-info-viewer roles let everyone GET.
PUBLIC_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz",
                "/openapi", "/openapi/*")


def _review_kind(api_version: str, kind: str) -> kinds.Kind:
    found = kinds.review(api_version, kind)
    assert found is not None, f"{kind} missing from proto/kinds.py REVIEWS"
    return found


SELF_SUBJECT_ACCESS_REVIEW = _review_kind(f"{AUTHORIZATION}/v1", "SelfSubjectAccessReview")
SUBJECT_ACCESS_REVIEW = _review_kind(f"{AUTHORIZATION}/v1", "SubjectAccessReview")
SELF_SUBJECT_RULES_REVIEW = _review_kind(f"{AUTHORIZATION}/v1", "SelfSubjectRulesReview")
SELF_SUBJECT_REVIEW = _review_kind("authentication.k8s.io/v1", "SelfSubjectReview")
TOKEN_REVIEW = _review_kind("authentication.k8s.io/v1", "TokenReview")


def _parse(kind: kinds.Kind, body: Any) -> Any:
    """The body as its message; wrong kinds and unknown fields are refused before anything is asked."""
    if not isinstance(body, dict):
        raise BadRequest(f"a {kind.kind} must be a JSON object, not {type(body).__name__}")
    api_version, kind_name = body.get("apiVersion", kind.api_version), body.get("kind", kind.kind)
    if (api_version, kind_name) != (kind.api_version, kind.kind):
        raise BadRequest(f"expected {kind.kind} of {kind.api_version}, got {kind_name} of {api_version}")
    return manifest.from_dict(body, kind, what=f'{kind.kind}.{kind.group} ""')


def _answer(review: Message, **status: Any) -> dict[str, Any]:
    out = manifest.to_dict(review)
    out.setdefault("metadata", {})["creationTimestamp"] = None
    out["status"] = status
    return out


# ---------------------------------------------------------------- access reviews


def _attributes(user: UserInfo, spec: Any, what: str) -> Attributes | None:
    """The Attributes a review's spec asks about; None for a non-resource path."""
    has_resource, has_path = spec.HasField("resource_attributes"), spec.HasField("non_resource_attributes")
    if has_resource == has_path:
        raise Invalid(what, [("spec.resourceAttributes", 'Invalid value: "null": exactly one of '
                              "nonResourceAttributes or resourceAttributes must be specified")])
    if has_path:
        return None
    ra = spec.resource_attributes
    # A URL's plural (pods.metrics.k8s.io) is checked under the name RBAC rules use (podmetrics).
    kind = kinds.served(ra.group, ra.resource)
    resource, namespaced = (kind.resource, kind.namespaced) if kind is not None else (ra.resource, True)
    return Attributes(user, ra.verb, resource, ra.namespace if namespaced else "", ra.name, ra.subresource,
                      ra.group)


def _rules(authorizer: Authorizer, attrs: Attributes) -> list[rbac_pb2.PolicyRule] | None:
    """The rules the user holds where `attrs` point, if the authoriser can list them (RBAC can)."""
    rules_for = getattr(authorizer, "rules_for", None)
    return None if rules_for is None else list(rules_for(attrs))


def _path_allowed(authorizer: Authorizer, user: UserInfo, path: str, verb: str) -> bool:
    """RBAC's nonResourceURLs rules, which the Attributes of a resource request cannot carry."""
    if MASTERS in user.groups:
        return True
    if verb == "get" and _path_matches(PUBLIC_PATHS, path):
        return True
    rules = _rules(authorizer, Attributes(user, verb, "")) or []
    return any(("*" in r.verbs or verb in r.verbs) and _path_matches(r.non_resource_urls, path) for r in rules)


def _path_matches(patterns: Iterable[str], path: str) -> bool:
    return any(p == path or p == "*" or (p.endswith("*") and path.startswith(p[:-1])) for p in patterns)


def _decide(authorizer: Authorizer, user: UserInfo, spec: Any, what: str) -> dict[str, Any]:
    attrs = _attributes(user, spec, what)
    try:
        if attrs is None:
            nra = spec.non_resource_attributes
            return {"allowed": _path_allowed(authorizer, user, nra.path, nra.verb)}
        authorizer.authorize(attrs)
    except Forbidden:
        # RBAC has no opinion rather than a denial, and gives no reason: kubectl prints a bare "no".
        return {"allowed": False}
    except ApiError as err:  # the authoriser could not decide (e.g. its cache is not synced)
        return {"allowed": False, "evaluationError": str(err)}
    return {"allowed": True}


def self_subject_access_review(authorizer: Authorizer, user: UserInfo, body: dict[str, Any]) -> dict[str, Any]:
    """`kubectl auth can-i`: may the caller do what the review's spec says? Anyone may ask."""
    review = _parse(SELF_SUBJECT_ACCESS_REVIEW, body)
    return _answer(review, **_decide(authorizer, user, review.spec, 'SelfSubjectAccessReview.authorization.k8s.io ""'))


def subject_access_review(authorizer: Authorizer, caller: UserInfo, body: dict[str, Any]) -> dict[str, Any]:
    """May `spec.user` (in `spec.groups`) do what the spec says? About another user, reviewers only.

    Raises Forbidden when the caller asks about someone else without `create
    subjectaccessreviews` in authorization.k8s.io.
    """
    review = _parse(SUBJECT_ACCESS_REVIEW, body)
    spec = review.spec
    what = 'SubjectAccessReview.authorization.k8s.io ""'
    if not spec.user and not spec.groups:
        raise Invalid(what, [("spec.user", 'Invalid value: "": at least one of user or group must be specified')])
    subject = caller
    if spec.user != caller.name:
        authorizer.authorize(Attributes(caller, "create", "subjectaccessreviews", api_group=AUTHORIZATION))
        subject = UserInfo(spec.user, (*spec.groups, AUTHENTICATED))
    return _answer(review, **_decide(authorizer, subject, spec, what))


def self_subject_rules_review(authorizer: Authorizer, user: UserInfo, body: dict[str, Any]) -> dict[str, Any]:
    """`kubectl auth can-i --list`: every rule the caller holds in `spec.namespace`.

    Complete for an authoriser that can list rules (RBAC); otherwise `incomplete` with
    an evaluationError, as Kubernetes answers for webhook authorisers.
    """
    review = _parse(SELF_SUBJECT_RULES_REVIEW, body)
    rules = _rules(authorizer, Attributes(user, "", "", namespace=review.spec.namespace))
    if rules is None:
        return _answer(review, resourceRules=[], nonResourceRules=[], incomplete=True,
                       evaluationError="the authorizer cannot list rules")
    resource_rules = [{"verbs": list(r.verbs), "apiGroups": list(r.api_groups), "resources": list(r.resources),
                       **({"resourceNames": list(r.resource_names)} if r.resource_names else {})}
                      for r in rules if r.resources]
    non_resource_rules = [{"verbs": list(r.verbs), "nonResourceURLs": list(r.non_resource_urls)}
                          for r in rules if r.non_resource_urls]
    # Kubernetes' system:discovery and system:basic-user, which every authenticated user holds.
    non_resource_rules.append({"verbs": ["get"], "nonResourceURLs": list(PUBLIC_PATHS)})
    resource_rules.append({"verbs": ["create"], "apiGroups": [AUTHORIZATION],
                           "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})
    return _answer(review, resourceRules=resource_rules, nonResourceRules=non_resource_rules, incomplete=False)


# ---------------------------------------------------------------- identity reviews


def _user_info(user: UserInfo) -> dict[str, Any]:
    info: dict[str, Any] = {"username": user.name}
    if user.groups:
        info["groups"] = list(user.groups)
    return info


def self_subject_review(user: UserInfo) -> dict[str, Any]:
    """`kubectl auth whoami`: the caller as this apiserver authenticated them."""
    return {"kind": SELF_SUBJECT_REVIEW.kind, "apiVersion": SELF_SUBJECT_REVIEW.api_version,
            "metadata": {"creationTimestamp": None}, "status": {"userInfo": _user_info(user)}}


def token_review(lookup: Callable[[str, tuple[str, ...]], UserInfo | None], body: dict[str, Any]) -> dict[str, Any]:
    """Whom does `spec.token` name, for `spec.audiences`? `lookup` is the apiserver's own token authenticator.

    An unknown token is `authenticated: false`, not an error: the question was answered.
    With audiences, a service-account token must be for one of them (not the apiserver's own).
    """
    review = _parse(TOKEN_REVIEW, body)
    if not review.spec.token:
        raise Invalid('TokenReview.authentication.k8s.io ""', [("spec.token", "Required value")])
    user = lookup(review.spec.token, tuple(review.spec.audiences))
    review.spec.token = ""  # a token is a credential: never echoed back
    if user is None:
        return _answer(review, authenticated=False)
    audiences = {"audiences": list(review.spec.audiences)} if review.spec.audiences else {}
    return _answer(review, authenticated=True, user=_user_info(user), **audiences)
