"""The Kubernetes HTTP API: the apiserver's second transport, beside gRPC, over the same request core.

kubectl, the `kubernetes` Python client, kopf and every add-on speak it. `app.py`
builds the aiohttp application (middlewares, routes); `requestinfo.py` reads a
path as Kubernetes does; `handlers.py` and `watch.py` serve the verbs through
controlplane/apiserver/endpoints.py; `codec.py` encodes bodies and negotiates
Tables; `status.py` maps every ApiError to a Status; `discovery.py` answers /api
and /apis; `logs.py`, `exec.py` and `portforward.py` stream from kubelets.
docs/http-api.md tells what real clients send.
"""
