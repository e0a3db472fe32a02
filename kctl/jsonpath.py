"""`kctl get -o jsonpath=TEMPLATE`: kubectl's JSONPath templates over the JSON of what was got.

A template is text with `{...}` actions, as in kubectl:

    {.spec.ports[0].nodePort}                       one field
    {.items[*].metadata.name}                       every match, joined by spaces
    {range .items[*]}{.metadata.name}{"\\t"}{.status.podIP}{"\\n"}{end}
    {"literal"}                                     a quoted string (\\n and \\t are understood)

The expressions themselves are evaluated by jsonpath-ng (`.a.b` is read as `$.a.b`); this
module only splits the template, runs `range ... end` blocks over their matches and prints
values the way kubectl does (strings bare, other values as JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng.ext import parse as parse_path  # ext: kubectl's filters, [?(@.type=="Ready")]


class TemplateError(ValueError):
    """The template cannot be parsed, or a field it names is not there."""


@dataclass
class _Text:
    text: str


@dataclass
class _Field:
    path: str


@dataclass
class _Range:
    path: str
    body: list[_Text | _Field | _Range] = field(default_factory=list)


_Node = _Text | _Field | _Range
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r", '\\"': '"', "\\\\": "\\"}


def render(template: str, data: Any) -> str:
    """Fill `template` from `data` (a decoded JSON document)."""
    return "".join(_run(_parse(template), data))


def check(template: str) -> None:
    """Parse `template` without data: raises TemplateError for bad syntax or an unparsable path."""
    _parse(template)


def _actions(template: str) -> list[tuple[bool, str]]:
    """Split into (is_action, text) pieces; `{`/`}` inside a quoted literal do not count."""
    pieces: list[tuple[bool, str]] = []
    i = 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            pieces.append((False, template[i:]))
            break
        if start > i:
            pieces.append((False, template[i:start]))
        j, quoted = start + 1, False
        while j < len(template) and (quoted or template[j] != "}"):
            if template[j] == '"' and template[j - 1] != "\\":
                quoted = not quoted
            j += 1
        if j >= len(template):
            raise TemplateError(f"unclosed action starting at character {start + 1}: {template[start:]!r}")
        pieces.append((True, template[start + 1:j].strip()))
        i = j + 1
    return pieces


def _parse(template: str) -> list[_Node]:
    top: list[_Node] = []
    stack: list[list[_Node]] = [top]
    for is_action, text in _actions(template):
        if not is_action:
            stack[-1].append(_Text(text))
        elif not text:
            raise TemplateError("empty action {}")
        elif text.startswith('"'):
            if len(text) < 2 or not text.endswith('"'):
                raise TemplateError(f"unterminated string in {{{text}}}")
            literal = text[1:-1]
            for escape, char in _ESCAPES.items():
                literal = literal.replace(escape, char)
            stack[-1].append(_Text(literal))
        elif text == "end":
            if len(stack) == 1:
                raise TemplateError("{end} without a {range}")
            stack.pop()
        elif text.split(None, 1)[0] == "range":
            block = _Range(_checked(text.split(None, 1)[1] if " " in text else ""))
            stack[-1].append(block)
            stack.append(block.body)
        else:
            stack[-1].append(_Field(_checked(text)))
    if len(stack) > 1:
        raise TemplateError("{range} without an {end}")
    return top


def _checked(path: str) -> str:
    if not path:
        raise TemplateError("range needs a path, e.g. {range .items[*]}")
    _compile(path)
    return path


def _compile(path: str) -> Any:
    expression = "$" + path if path.startswith((".", "[")) else path
    try:
        return parse_path(expression)
    except Exception as exc:  # jsonpath-ng's lexer and parser raise plain Exception as well as their own
        raise TemplateError(f"cannot parse {{{path}}}: {exc}") from None


def _matches(path: str, data: Any) -> list[Any]:
    found = [m.value for m in _compile(path).find(data)]
    if not found:
        raise TemplateError(f"{path} is not found")
    return found


def _run(nodes: list[_Node], data: Any) -> list[str]:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Field):
            out.append(" ".join(_printed(v) for v in _matches(node.path, data)))
        else:
            items = _matches(node.path, data)
            # `{range .items[*]}` yields each item; a path to a list itself ranges over its elements.
            if len(items) == 1 and isinstance(items[0], list):
                items = items[0]
            for item in items:
                out.extend(_run(node.body, item))
    return out


def _printed(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
