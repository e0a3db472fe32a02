"""Label selectors as users type them: Kubernetes' syntax, and Kubernetes' words for what is wrong.

proto/selectors.py parses every `-l` / `labelSelector` the apiserver gets, over
gRPC and HTTP alike. A malformed one is refused with 400 BadRequest and the
message kubectl users know from Kubernetes (`unable to parse requirement:
found '!', expected: identifier` for `!!`), and nothing is listed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from client import Client
from proto import core_pb2
from proto.errors import BadRequest
from proto.selectors import parse_label_selector


@pytest.mark.parametrize(("text", "shown"), [
    ("", ""),
    ("app=web", "app=web"),
    ("app==web,tier!=db", "app=web,tier!=db"),
    ("env in (a, b),release notin (x),gpu,!spot", "env in (a,b),release notin (x),gpu,!spot"),
    ("x in (foo,,baz),z notin ()", "x in (foo,,baz),z notin ()"),  # empty entries are the empty value
    ("a=", "a="),
])
def test_kubernetes_selector_syntax_parses(text: str, shown: str) -> None:
    assert str(parse_label_selector(text)) == shown


def test_requirements_match_as_kubernetes_says() -> None:
    selector = parse_label_selector("env in (a,b),!spot,tier!=db")
    assert selector.matches({"env": "a"}) and selector.matches({"env": "b", "tier": "web"})
    assert not selector.matches({"env": "a", "spot": ""}) and not selector.matches({"env": "c"})
    assert not selector.matches({"env": "a", "tier": "db"})


@pytest.mark.parametrize(("text", "message"), [
    ("!!", "unable to parse requirement: found '!', expected: identifier"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("app in web", "unable to parse requirement: found 'web' expected: '('"),
    ("app in (a", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
    ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    ("a,", "found '', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
])
def test_malformed_selectors_are_refused_with_kubernetes_messages(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_label_selector(text)
    assert str(refused.value) == message


async def test_the_apiserver_refuses_a_bang_bang_selector_over_grpc_and_http(
        client: Client, namespace: str, http_url: str) -> None:
    with pytest.raises(BadRequest) as refused_grpc:
        await client.list(core_pb2.Pod, namespace, label_selector="!!")
    assert str(refused_grpc.value) == "unable to parse requirement: found '!', expected: identifier"
    query = urllib.parse.urlencode({"labelSelector": "!!"})
    url = f"{http_url}/api/v1/namespaces/{namespace}/pods?{query}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, url, timeout=10)
    status = json.loads(refused.value.read())
    assert refused.value.code == 400
    assert (status["reason"], status["message"]) == (
        "BadRequest", "unable to parse requirement: found '!', expected: identifier")
