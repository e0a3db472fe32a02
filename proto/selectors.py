"""Label and field selectors: the one place that parses and matches them.

Label selectors use Kubernetes' syntax (`app=web,tier!=db,env in (a,b),
release notin (x),gpu,!spot`) or the LabelSelector message of a Deployment or
Service. Field selectors (`metadata.name=x,spec.nodeName!=`) read any scalar
field by its JSON path. The apiserver filters with these; informers and the
controllers match with them; kctl passes the strings through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import Message

from proto import meta_pb2
from proto.errors import BadRequest

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("gt", "lt"):
            try:
                have, want = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return have > want if self.operator == "gt" else have < want
        raise BadRequest(f"unknown selector operator {self.operator!r}")

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"{self.key}{self.operator}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = field(default_factory=tuple)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


NOTHING = LabelSelector((Requirement("", "in", ()),))  # a nil LabelSelector message selects nothing


_SYMBOLS = frozenset(("!=", "==", "=", "(", ")", ",", "!"))
_END = ""  # the end of the string, as Kubernetes' lexer names it in messages


def _is_identifier(token: str) -> bool:
    return token not in _SYMBOLS and token != _END


def parse_label_selector(text: str) -> LabelSelector:
    """Parse `kubectl -l` syntax as Kubernetes' labels.Parse does; raises BadRequest with its messages.

    `!!` is refused (`unable to parse requirement: found '!', expected: identifier`), as are a
    missing '(' after in/notin, a dangling ',' and the like, each naming what was found.
    """
    tokens = [*_TOKEN.findall(text or ""), _END]
    reqs: list[Requirement] = []
    pos = 0
    while tokens[pos] != _END:
        if tokens[pos] != "!" and not _is_identifier(tokens[pos]):
            raise BadRequest(f"found '{tokens[pos]}', expected: !, identifier, or 'end of string'")
        requirement, pos = _parse_requirement(tokens, pos)
        reqs.append(requirement)
        separator = tokens[pos]
        pos += 1
        if separator == _END:
            break
        if separator != ",":
            raise BadRequest(f"found '{separator}', expected: ',' or 'end of string'")
        if tokens[pos] != "!" and not _is_identifier(tokens[pos]):
            raise BadRequest(f"found '{tokens[pos]}', expected: identifier after ','")
    return LabelSelector(tuple(reqs))


def _parse_requirement(tokens: list[str], pos: int) -> tuple[Requirement, int]:
    """One `[!]key [op value | in|notin (values)]` from `pos`; returns it and the position after it."""
    def fail(why: str) -> BadRequest:
        return BadRequest(f"unable to parse requirement: {why}")

    negated = tokens[pos] == "!"
    pos += negated
    key = tokens[pos]
    pos += 1
    if not _is_identifier(key):
        raise fail(f"found '{key}', expected: identifier")
    if negated or tokens[pos] in (",", _END):
        return Requirement(key, "!" if negated else "exists"), pos
    operator = tokens[pos]
    pos += 1
    if operator in ("=", "==", "!="):
        value = tokens[pos]
        if value in (",", _END):
            value = ""
        elif _is_identifier(value):
            pos += 1
        else:
            raise fail(f"found '{value}', expected: identifier")
        return Requirement(key, "!=" if operator == "!=" else "=", (value,)), pos
    if operator not in ("in", "notin"):
        raise fail(f"found '{operator}', expected: in, notin, =, ==, !=, gt, lt")
    if tokens[pos] != "(":
        raise fail(f"found '{tokens[pos]}' expected: '('")
    pos += 1
    # Empty entries are the empty value: "()" and "(a,)" select it too, as in Kubernetes.
    values: list[str] = []
    expect_value = True
    while tokens[pos] != ")":
        token = tokens[pos]
        if token == ",":
            if expect_value:
                values.append("")
            expect_value = True
        elif _is_identifier(token) and expect_value:
            values.append(token)
            expect_value = False
        else:
            raise fail(f"found '{token}', expected: ',', ')' or identifier")
        pos += 1
    if expect_value:
        values.append("")
    return Requirement(key, operator, tuple(dict.fromkeys(values))), pos + 1


def from_message(selector: meta_pb2.LabelSelector | None) -> LabelSelector:
    """A LabelSelector message (matchLabels + matchExpressions) as a matcher.

    An unset message selects nothing, an empty one everything, as in Kubernetes.
    """
    if selector is None:
        return NOTHING
    reqs = [Requirement(k, "=", (v,)) for k, v in sorted(selector.match_labels.items())]
    for expr in selector.match_expressions:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!",
              "Gt": "gt", "Lt": "lt"}.get(expr.operator)
        if op is None:
            raise BadRequest(f"{expr.operator!r} is not a valid label selector operator")
        reqs.append(Requirement(expr.key, op, tuple(expr.values)))
    return LabelSelector(tuple(reqs))


def from_match_labels(labels: Mapping[str, str]) -> LabelSelector:
    """A Service's `selector` map as a matcher (an empty map matches everything)."""
    return LabelSelector(tuple(Requirement(k, "=", (v,)) for k, v in sorted(labels.items())))


# ---------------------------------------------------------------- field selectors


@dataclass(frozen=True)
class FieldRequirement:
    path: str  # JSON path such as spec.nodeName
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Message) -> bool:
        return all((field_value(obj, r.path) == r.value) != r.negate for r in self.requirements)

    def value_of(self, path: str) -> str | None:
        """The value an `=` requirement pins `path` to, if any (for index lookups)."""
        for r in self.requirements:
            if r.path == path and not r.negate:
                return r.value
        return None

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(f"{r.path}{'!=' if r.negate else '='}{r.value}" for r in self.requirements)


def parse_field_selector(text: str) -> FieldSelector:
    reqs = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                path, _, value = part.partition(op)
                break
        else:
            raise BadRequest(f"invalid field selector {text!r}: {part!r} needs '=', '==' or '!='")
        path = path.strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*", path):
            raise BadRequest(f"invalid field selector {text!r}: bad field path {path!r}")
        reqs.append(FieldRequirement(path, value.strip(), op == "!="))
    return FieldSelector(tuple(reqs))


def field_value(obj: Message, path: str) -> str:
    """A scalar field's value as text, by its JSON path; unset or missing reads as ""."""
    current: object = obj
    for name in path.split("."):
        if not isinstance(current, Message):
            return ""
        fd = next((f for f in current.DESCRIPTOR.fields if f.json_name == name), None)
        if fd is None or fd.is_repeated:
            raise BadRequest(f'field label not supported: "{path}"')
        current = getattr(current, fd.name)
    if isinstance(current, Message):
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)
