"""GET pods/<name>/log: a container's log as streamed text/plain, as `kubectl logs` reads it.

The query is Kubernetes' PodLogOptions: container, follow, previous, timestamps,
tailLines, sinceSeconds, sinceTime, limitBytes. Bad options are a Status before
anything is streamed (422 `PodLogOptions "x" is invalid` for out-of-range
values, 400 for values that do not parse), and so are a missing pod, a wrong
container or one that never started; the kubelet (proxy.py) checks the last
once it has the container. Then the body is the kubelet's chunks as they come,
chunked, open for as long as a follow lasts; the client going away ends the
kubelet's stream too.
"""

from __future__ import annotations

import contextlib
from contextlib import aclosing
from datetime import datetime

import grpc
from aiohttp import web
from multidict import MultiMapping

from controlplane.apiserver.http.channels import parse_bool
from controlplane.apiserver.http.status import status_response
from controlplane.apiserver.proxy import KubeletProxy
from proto import kubelet_pb2
from proto.errors import ApiError, BadRequest, Invalid


def parse_int(query: MultiMapping[str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f'invalid value for query parameter "{name}": {value!r} is not an integer') from None


def log_request(query: MultiMapping[str], namespace: str, pod: str) -> kubelet_pb2.LogsRequest:
    """The kubelet's LogsRequest for PodLogOptions in `query`, validated as Kubernetes validates them."""
    request = kubelet_pb2.LogsRequest(namespace=namespace, pod=pod, container=query.get("container", ""),
                                      follow=parse_bool(query, "follow"), previous=parse_bool(query, "previous"),
                                      timestamps=parse_bool(query, "timestamps"))
    causes: list[tuple[str, str]] = []
    tail, since, limit = parse_int(query, "tailLines"), parse_int(query, "sinceSeconds"), parse_int(query, "limitBytes")
    since_time = query.get("sinceTime", "")
    if tail is not None:
        if tail < 0:
            causes.append(("tailLines", f"Invalid value: {tail}: must be greater than or equal to 0"))
        request.tail_lines = tail
    if since is not None:
        if since < 1:
            causes.append(("sinceSeconds", f"Invalid value: {since}: must be greater than 0"))
        request.since_seconds = since
    if limit is not None:
        if limit < 1:
            causes.append(("limitBytes", f"Invalid value: {limit}: must be greater than 0"))
        request.limit_bytes = limit
    if since_time:
        try:
            datetime.fromisoformat(since_time.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f'invalid value for query parameter "sinceTime": {since_time!r} '
                             "is not an RFC 3339 time") from None
        request.since_time = since_time
        if since is not None:
            causes.append(("", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
    if causes:
        raise Invalid(f'PodLogOptions "{pod}"', causes)
    return request


async def serve_logs(request: web.Request, kubelets: KubeletProxy, namespace: str, pod: str
                     ) -> web.StreamResponse:
    try:
        logs = log_request(request.query, namespace, pod)
        _, logs.container = await kubelets.target(namespace, pod, logs.container, running=False)
        chunks = await kubelets.open_logs(logs)
    except ApiError as err:
        return status_response(err)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    async with aclosing(chunks):
        await response.prepare(request)
        try:
            async for chunk in chunks:
                await response.write(chunk.data)
        except grpc.RpcError:
            pass  # the kubelet went away mid-stream: the log ends where it got to
        except ConnectionResetError:
            return response  # the client went away: aclosing ends the kubelet's stream
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response
