"""`/openapi/v2`: the same API as one Swagger 2.0 document, for clients that still read it.

kubectl falls back to v2 where a v3 document lacks what it looks for, and older
generated clients read only v2. Nothing new is described here: the v3 documents
are rewritten in v2's words (`definitions` for `components.schemas`, a `body`
parameter for `requestBody`, `consumes`/`produces` for content types).
"""

from __future__ import annotations

from typing import Any

_V3_REF = "#/components/schemas/"
_V2_REF = "#/definitions/"


def _schema(node: Any) -> Any:
    """A v3 schema in v2's words: refs into definitions; a described ref as $ref with siblings, as Kubernetes."""
    if isinstance(node, list):
        return [_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _schema(v) for k, v in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = _V2_REF + out["$ref"].removeprefix(_V3_REF)
    all_of = out.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        del out["allOf"]
        out = {**all_of[0], **out}
    return dict(sorted(out.items()))


def _parameter(p: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in p.items() if k != "schema"}
    out.update(p.get("schema", {}))
    return dict(sorted(out.items()))


def _operation(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
    params = [_parameter(p) for p in op.get("parameters", [])]
    body = op.get("requestBody")
    if body:
        content = body["content"]
        out["consumes"] = list(content)
        params.insert(0, {"in": "body", "name": "body", "required": True,
                          "schema": _schema(next(iter(content.values()))["schema"])})
    if params:
        out["parameters"] = params
    produces: list[str] = []
    responses: dict[str, Any] = {}
    for code, response in op["responses"].items():
        content = response.get("content", {})
        produces += [t for t in content if t not in produces]
        answer: dict[str, Any] = {"description": response["description"]}
        if content:
            answer["schema"] = _schema(next(iter(content.values()))["schema"])
        responses[code] = answer
    out["produces"] = produces
    out["responses"] = responses
    out["schemes"] = ["https"]
    return dict(sorted(out.items()))


def document(v3_documents: list[dict[str, Any]], info: dict[str, str]) -> dict[str, Any]:
    """One Swagger 2.0 document of every group-version's v3 document."""
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for doc in v3_documents:
        for name, schema in doc["components"]["schemas"].items():
            definitions[name] = _schema(schema)
        for path, item in doc["paths"].items():
            paths[path] = {method: ([_parameter(p) for p in op] if method == "parameters" else _operation(op))
                           for method, op in item.items()}
    return {
        "definitions": dict(sorted(definitions.items())),
        "info": info,
        "paths": dict(sorted(paths.items())),
        "swagger": "2.0",
    }
