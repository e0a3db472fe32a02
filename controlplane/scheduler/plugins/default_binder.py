"""DefaultBinder: make a decision real with the Binding call (pods/binding).

The apiserver accepts one Binding per pod (Conflict afterwards), which is what
keeps "bound exactly once" true across scheduler restarts.
"""

from __future__ import annotations

from typing import Any

from client import Client
from controlplane.scheduler.framework import SUCCESS, Code, CycleState, Handle, Status
from controlplane.scheduler.nodeinfo import PodInfo
from proto import core_pb2
from proto.errors import ApiError

NAME = "DefaultBinder"


class DefaultBinder:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        if handle.client is None:
            raise ValueError(f"{NAME} needs an apiserver client")
        self.client: Client = handle.client

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        target = core_pb2.Pod()
        target.metadata.name, target.metadata.namespace, target.metadata.uid = pod.name, pod.namespace, pod.uid
        try:
            await self.client.bind(target, node_name)
        except ApiError as err:
            return Status(Code.ERROR, (str(err),), NAME)
        return SUCCESS
