"""Validation of apps/v1: Deployment and ReplicaSet selectors, templates and rollout strategy."""

from __future__ import annotations

import copy

from tests.test_validation_support import NGINX_DEPLOYMENT, deployment, errors_of, paths_of, update_errors

# ---------------------------------------------------------------- ReplicaSet, Deployment


def test_template_labels_must_match_the_selector() -> None:
    manifest = deployment()
    manifest["spec"]["template"]["metadata"]["labels"] = {"app": "web"}
    assert errors_of(manifest) == [
        ("spec.template.metadata.labels",
         'Invalid value: {"app":"web"}: `selector` does not match template `labels`')]


def test_selector_is_required_and_not_empty() -> None:
    missing = deployment()
    del missing["spec"]["selector"]
    assert errors_of(missing) == [("spec.selector", "Required value")]
    empty = deployment(selector={})
    assert errors_of(empty) == [
        ("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")]
    bad = deployment(selector={"matchExpressions": [{"key": "app", "operator": "Equals",
                                                     "values": ["nginx"]}]})
    assert paths_of(bad) == ["spec.selector.matchExpressions[0].operator"]


def test_a_template_is_a_pod_spec_that_always_restarts() -> None:
    manifest = deployment()
    template = manifest["spec"]["template"]["spec"]
    template["restartPolicy"] = "OnFailure"
    template["containers"][0]["ports"][0]["containerPort"] = 70000
    assert errors_of(manifest) == [
        ("spec.template.spec.containers[0].ports[0].containerPort",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.template.spec.restartPolicy", 'Unsupported value: "OnFailure": supported values: "Always"'),
    ]


def test_replicas_and_history_may_not_be_negative() -> None:
    errors = errors_of(deployment(replicas=-1, revisionHistoryLimit=-1))
    assert errors == [("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
                      ("spec.revisionHistoryLimit", "Invalid value: -1: must be greater than or equal to 0")]


def test_deployment_strategy() -> None:
    assert errors_of(deployment(strategy={"type": "BlueGreen"})) == [
        ("spec.strategy.type",
         'Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"')]
    assert errors_of(deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})) == [
        ("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")]


def test_rolling_update_bounds() -> None:
    errors = errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "150%"}}))
    assert errors == [
        ("spec.strategy.rollingUpdate.maxUnavailable",
         'Invalid value: "150%": must not be greater than 100%'),
        ("spec.strategy.rollingUpdate.maxSurge",
         "Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' "
         "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
    ]
    errors = errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}))
    assert errors == [("spec.strategy.rollingUpdate.maxUnavailable",
                       'Invalid value: "0%": may not be 0 when `maxSurge` is 0')]
    assert errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})) == []


def test_progress_deadline_must_exceed_min_ready_seconds() -> None:
    assert errors_of(deployment(minReadySeconds=600, progressDeadlineSeconds=600)) == [
        ("spec.progressDeadlineSeconds", "Invalid value: 600: must be greater than minReadySeconds")]


def test_selector_is_immutable() -> None:
    old = deployment()
    old["metadata"]["uid"] = "d1"
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["tier"] = "web"
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    assert update_errors(old, new) == [
        ("spec.selector", 'Invalid value: {"matchLabels":{"app":"nginx","tier":"web"}}: field is immutable')]
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 10
    assert update_errors(old, scaled) == []


def test_replica_set_gets_the_same_rules() -> None:
    manifest = copy.deepcopy(NGINX_DEPLOYMENT)
    manifest["kind"] = "ReplicaSet"
    assert errors_of(manifest) == []
    manifest["spec"]["template"]["metadata"]["labels"] = {}
    assert paths_of(manifest) == ["spec.template.metadata.labels"]
