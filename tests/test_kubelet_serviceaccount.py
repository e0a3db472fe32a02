"""A pod's identity on the node: its projected API token volume and the Services' environment variables.

Given a real kubelet on containerd (the session's apiserver), a pod running as a
service account gets, through the ServiceAccount admission, the `kube-api-access-*`
volume; the kubelet fills it with a token bound to the pod (TokenRequest), the
cluster CA from `kube-root-ca.crt` and the namespace, and starts its containers with
KUBERNETES_SERVICE_HOST/PORT and the Docker-link variables of the namespace's
Services.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from client import Client
from nodeagent.kubelet import serviceenv
from nodeagent.kubelet.volumes import projected
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, make_pod, node, wait_pod

__all__ = ["node"]

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def service(name: str, ip: str, *ports: tuple[str, int, str]) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name = name
    svc.spec.cluster_ip = ip
    for port_name, number, protocol in ports:
        svc.spec.ports.add(name=port_name, port=number, protocol=protocol)
    return svc


def test_service_variables_are_kubernetes_names() -> None:
    env = serviceenv.from_services([service("my-db", "10.96.0.7", ("sql", 5432, "TCP"), ("", 9000, "UDP")),
                                    service("headless", "None", ("x", 80, "TCP"))])
    assert env == {
        "MY_DB_SERVICE_HOST": "10.96.0.7", "MY_DB_SERVICE_PORT": "5432", "MY_DB_SERVICE_PORT_SQL": "5432",
        "MY_DB_PORT": "tcp://10.96.0.7:5432",
        "MY_DB_PORT_5432_TCP": "tcp://10.96.0.7:5432", "MY_DB_PORT_5432_TCP_PROTO": "tcp",
        "MY_DB_PORT_5432_TCP_PORT": "5432", "MY_DB_PORT_5432_TCP_ADDR": "10.96.0.7",
        "MY_DB_PORT_9000_UDP": "udp://10.96.0.7:9000", "MY_DB_PORT_9000_UDP_PROTO": "udp",
        "MY_DB_PORT_9000_UDP_PORT": "9000", "MY_DB_PORT_9000_UDP_ADDR": "10.96.0.7"}


def test_a_token_is_requested_again_at_80_percent_of_its_life() -> None:
    token = projected._Token("t", issued=1000.0, expires=1000.0 + 3600)
    assert not token.due(1000.0 + 0.79 * 3600)
    assert token.due(1000.0 + 0.8 * 3600)
    day = projected._Token("t", issued=0.0, expires=10 * 86400.0)
    assert day.due(86400.0)  # never older than a day


async def test_a_pod_reads_its_token_ca_and_namespace_and_sees_service_variables(
        client: Client, namespace: str, node: LocalNode) -> None:
    for name in ("default", "robot"):
        sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
        sa.metadata.name = name
        await client.create(sa, namespace=namespace)
    ca = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    ca.metadata.name = "kube-root-ca.crt"
    ca.data["ca.crt"] = "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
    await client.create(ca, namespace=namespace)
    db = core_pb2.Service(api_version="v1", kind="Service")
    db.metadata.name = "my-db"
    db.spec.ports.add(name="sql", port=5432)
    db = await client.create(db, namespace=namespace)

    pod = make_pod("who", node, busybox("app", "sleep", "3600"), grace=1)
    pod.spec.service_account_name = "robot"
    created = await client.create(pod, namespace=namespace)
    assert [v.name[:16] for v in created.spec.volumes] == ["kube-api-access-"]
    await wait_pod(client, "who", namespace, lambda p: p.status.phase == "Running", timeout=60, what="who Running")

    async def sh(script: str) -> str:
        reply = await client.exec(namespace, "who", ["sh", "-c", script])
        return reply.stdout.decode()

    token = await sh(f"cat {MOUNT}/token")
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:robot"
    assert claims["kubernetes.io"]["pod"] == {"name": "who", "uid": created.metadata.uid}
    assert claims["exp"] - claims["iat"] == 3607
    assert await sh(f"cat {MOUNT}/namespace") == namespace
    assert await sh(f"cat {MOUNT}/ca.crt") == ca.data["ca.crt"]
    assert (await sh(f"ls {MOUNT}")).split() == ["ca.crt", "namespace", "token"]
    assert await sh(f"touch {MOUNT}/x 2>&1; echo $?") != "0\n"  # read-only
    env = dict(line.split("=", 1) for line in (await sh("env")).splitlines() if "=" in line)
    assert env["MY_DB_SERVICE_HOST"] == db.spec.cluster_ip and env["MY_DB_SERVICE_PORT_SQL"] == "5432"
    assert env["MY_DB_PORT_5432_TCP"] == f"tcp://{db.spec.cluster_ip}:5432"
    node_dir = Path(node.kubelet_config().root_dir) / "pods" / created.metadata.uid / "volumes" / "projected"
    assert node_dir.is_dir()
