"""Watches over HTTP: newline-delimited `{"type", "object"}` events on one chunked response.

`GET ...?watch=true` (or `/watch/...`) answers 200 at once and then writes one
JSON line per event from the registry's stream (registry.watch), flushed as it
comes, for as long as the client stays or until `timeoutSeconds`, when the
response ends cleanly (client-go and kubectl then watch again from the last
resourceVersion). As in kube-apiserver:

- no resourceVersion (or "0") starts with an ADDED event per existing object;
  otherwise every change after that version;
- `allowWatchBookmarks=true` adds BOOKMARK events in quiet periods, whose object
  carries only kind, apiVersion and metadata.resourceVersion;
- a resourceVersion older than etcd's history is not an HTTP error: the stream
  opens and its one event is an ERROR whose object is a Status 410 Expired
  (kopf and client-go relist on it);
- with `Accept: ...as=Table` each object is a one-row Table (column
  definitions in the first only), which is what `kubectl get -w` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web

from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.endpoints import Endpoints
from controlplane.apiserver.http import codec
from controlplane.apiserver.http.status import status_dict
from controlplane.apiserver.registry import Event
from proto import kinds
from proto.errors import ApiError, BadRequest

log = logging.getLogger(__name__)


def _timeout(query: Any) -> float | None:
    value = query.get("timeoutSeconds")
    if value in (None, ""):
        return None
    try:
        seconds = int(value)
    except ValueError:
        raise BadRequest(f'timeoutSeconds: invalid value "{value}": must be an integer') from None
    return float(seconds) if seconds > 0 else None


class _Encoder:
    """One watch's events as JSON lines, in the rendering the client asked for."""

    def __init__(self, kind: kinds.Kind, rendering: codec.Rendering) -> None:
        self.kind = kind
        self.rendering = rendering
        self.headers_sent = False

    def line(self, event: Event) -> bytes:
        if event.type == "BOOKMARK":
            obj: dict[str, Any] = {"kind": self.kind.kind, "apiVersion": self.kind.api_version,
                                   "metadata": {"resourceVersion": str(event.revision)}}
        elif self.rendering.table:
            obj = codec.table(self.kind, [codec.parse(self.kind, event.object)], self.rendering)
            if self.headers_sent:
                obj["columnDefinitions"] = []
            self.headers_sent = True
        elif self.rendering.as_ in (codec.AS_PARTIAL, codec.AS_PARTIAL_LIST):
            obj = codec.partial_object(codec.parse(self.kind, event.object))
        else:  # the object itself, encoded once per version for every watcher (codec.ENCODED)
            return codec.watch_line(event.type, self.kind, event.object)
        return codec.dumps({"type": event.type, "object": obj}) + b"\n"


async def serve_watch(request: web.Request, endpoints: Endpoints, user: UserInfo, kind: kinds.Kind,
                      namespace: str, *, name: str = "",
                      encode: Callable[[Event, codec.Rendering], bytes] | None = None) -> web.StreamResponse:
    """Serve one watch; `encode` turns an event into its line where the kind's objects are not messages
    the codec knows (custom resources: controlplane/apiserver/crd/handlers.py)."""
    query = request.query
    field_selector = query.get("fieldSelector", "")
    if name:  # a watch of one object is a watch of the collection narrowed to its name
        field_selector = ",".join(s for s in (field_selector, f"metadata.name={name}") if s)
    timeout = _timeout(query)
    events = await endpoints.watch(
        user, kind, namespace, resource_version=query.get("resourceVersion", ""),
        label_selector=query.get("labelSelector", ""), field_selector=field_selector,
        allow_bookmarks=query.get("allowWatchBookmarks", "").lower() in ("true", "1"))
    rendering = codec.negotiate(request.headers.get("Accept", ""), query.get("includeObject", ""))
    encoder = _Encoder(kind, rendering)
    line = encoder.line if encode is None else (lambda event: encode(event, rendering))
    response = web.StreamResponse(status=200, headers={"Content-Type": codec.JSON,
                                                       "Transfer-Encoding": "chunked"})
    await response.prepare(request)
    async with aclosing(events):  # type: ignore[type-var]
        try:
            async with asyncio.timeout(timeout):
                async for event in events:
                    await response.write(line(event))
        except TimeoutError:
            pass  # timeoutSeconds: end the response cleanly, the client watches again
        except ApiError as err:
            # The stream is open (200 sent): the failure is its last event, e.g. 410 Expired.
            with contextlib.suppress(ConnectionError):
                await response.write(codec.dumps({"type": "ERROR", "object": status_dict(err)}) + b"\n")
        except ConnectionError:
            return response  # the client went away
        except Exception:
            # 200 is sent: no Status can follow. End the stream; the client watches again.
            log.exception("watch of %s failed", kind.resource)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
