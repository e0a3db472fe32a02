"""Admission webhooks on custom resources: they see, and patch, the object as its clients write it.

Given the CronTab CRD (tests/test_crd.py) and the HTTPS webhook server of tests/test_webhooks.py, a
mutating webhook whose rule names `crontabs` in `stable.example.com` labels new CronTabs, and a
validating one refuses those labelled deny=true: the review carries the CronTab's JSON (spec and all,
not the apiserver's storage envelope), the JSON patch lands in the stored object, and a refusal stores
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
from kubernetes.client.rest import ApiException

from client import Client
from tests.test_crd import GROUP, api, crontab, crontabs, custom  # noqa: F401 (fixtures)
from tests.test_webhooks import (  # noqa: F401 (fixtures)
    DENY_MESSAGE,
    MUTATED_LABEL,
    Config,
    WebhookServer,
    ca_bundle,
    configuration,
    install,
    installed,
    server,
    tls_files,
    webhook,
)


@pytest.fixture
async def labelled_ns(client: Client, namespace: str) -> str:
    """A namespace only this test's webhooks select (the session apiserver is shared)."""
    from proto import core_pb2
    obj = await client.get(core_pb2.Namespace, namespace)
    obj.metadata.labels["webhook-test"] = namespace
    await client.update(obj)
    return namespace


async def test_webhooks_mutate_and_deny_custom_objects(crontabs: str, api: k8s.ApiClient, client: Client,  # noqa: F811
                                                       labelled_ns: str, server: WebhookServer,  # noqa: F811
                                                       ca_bundle: bytes, installed: list[Config],  # noqa: F811
                                                       tmp_path: Path) -> None:
    ns = labelled_ns
    selector: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"webhook-test": ns}}}
    await install(client, installed, configuration("MutatingWebhookConfiguration", f"ct-label-{ns}", webhook(
        "add-label.crontabs.flotilla.dev", server.url("/mutate-add-label"), ca_bundle, resources=["crontabs"],
        api_groups=[GROUP], **selector)), server, ca_bundle, ns)
    await install(client, installed, configuration("ValidatingWebhookConfiguration", f"ct-deny-{ns}", webhook(
        "deny-label.crontabs.flotilla.dev", server.url("/validate-deny-label"), ca_bundle, resources=["crontabs"],
        api_groups=[GROUP], **selector)), server, ca_bundle, ns)
    objects = custom(api)

    created = objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("hooked", replicas=2))
    assert created["metadata"]["labels"][MUTATED_LABEL] == "true"
    assert created["spec"] == {"cronSpec": "5 0 * * *", "image": "my-awesome-cron-image", "replicas": 2}
    sent = [r for r in server.reviews if r["path"] == "/mutate-add-label" and r["namespace"] == ns][-1]
    assert sent["kind"] == {"group": GROUP, "version": "v1", "kind": "CronTab"}
    assert sent["resource"] == {"group": GROUP, "version": "v1", "resource": "crontabs"}
    assert sent["object"]["apiVersion"] == f"{GROUP}/v1" and sent["object"]["spec"]["replicas"] == 2

    refused = crontab("refused")
    refused["metadata"]["labels"] = {"deny": "true"}
    with pytest.raises(ApiException) as err:
        objects.create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", refused)
    assert err.value.status == 403 and DENY_MESSAGE in str(err.value.body)
    with pytest.raises(ApiException) as gone:
        objects.get_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "refused")
    assert gone.value.status == 404
