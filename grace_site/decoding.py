"""The one decoding path for JSON request bodies (every API endpoint, intake included).

A body is refused before any serializer, service or database sees it when it is too large (413), is
not UTF-8 JSON (400 ``detail``), or holds something GRACE cannot store the same way on SQLite and
PostgreSQL (400 naming the field and the path inside it):

- a NUL character (``\\u0000``): PostgreSQL rejects it in text and jsonb;
- a lone UTF-16 surrogate (``\\ud800``): not Unicode, so it cannot be encoded to UTF-8 at all;
- an object key longer than ``GRACE_API_MAX_KEY_LENGTH`` characters;
- objects and arrays nested deeper than ``GRACE_API_MAX_JSON_DEPTH`` levels (about 1,000 would
  otherwise exhaust the parser's recursion);
- a number too large to be represented (``1e400`` parses as infinity).

``text_problem`` is the same rule for text that arrives another way (``incidents.normalize``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from django.http import JsonResponse
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


def _too_large(limit: int) -> str:
    return f"Request body is over {limit} bytes."


def declared_length(value: str | None) -> int | None:
    """A request's ``Content-Length`` as a number of bytes, or None when it is missing or not a plain decimal
    number (``+5``, `` 5``, ``²``: the body is then read up to the limit and measured). A length of more than
    19 digits is counted as larger than any limit, without converting it."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 19 else 10**19


class DeclaredBodyLimit:
    """Middleware: an API request whose ``Content-Length`` is over ``GRACE_API_MAX_BODY_BYTES`` is answered 413
    before anything reads its body. DRF reads a JSON body whole before its parser runs, so the parser's own
    check alone would first wait for, and hold, a body of up to Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``; and
    one over that would get Django's bare 400 instead of the API's 413."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = declared_length(request.META.get("CONTENT_LENGTH"))
        limit = settings.GRACE_API_MAX_BODY_BYTES
        if declared is not None and declared > limit and request.path_info.startswith("/api/"):
            return JsonResponse({"detail": _too_large(limit)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        return self.get_response(request)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    match = _SURROGATE.search(text)
    if match:
        return f"contains a lone UTF-16 surrogate (\\u{ord(match.group()):04x}), which is not valid Unicode"
    return None


def show(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message: ASCII only, so it is safe to render whatever it holds."""
    shown = json.dumps(text[:limit])
    return shown[:-1] + '..."' if len(text) > limit else shown


def _path(parts: tuple) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{show(part)}]"
    return out


def _refuse(parts: tuple, problem: str) -> ValidationError:
    """A 400 keyed by the top-level field, whose message names the exact place."""
    field = "non_field_errors"
    if parts and isinstance(parts[0], str):
        field = parts[0] if _PLAIN_KEY.fullmatch(parts[0]) else show(parts[0])[1:-1]
    where = _path(parts)
    return ValidationError({field: [f"{where}: {problem}" if where else problem]})


def check(data: Any, *, max_depth: int, max_key_length: int) -> None:
    """Raise a 400 ValidationError naming the first place ``data`` cannot be stored (see the module)."""
    stack: list[tuple[Any, tuple, int]] = [(data, (), 1)]
    while stack:
        value, parts, depth = stack.pop()
        if isinstance(value, dict | list) and depth > max_depth:
            raise _refuse(parts, f"nests objects and arrays more than {max_depth} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                problem = text_problem(key)
                if problem:
                    raise _refuse((*parts, key), f"the key {problem}")
                if len(key) > max_key_length:
                    raise _refuse(
                        (*parts, key), f"the key is {len(key)} characters long; at most {max_key_length} are accepted"
                    )
                stack.append((item, (*parts, key), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, (*parts, index), depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise _refuse(parts, problem)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _refuse(parts, "is a number too large to be represented")


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _top_key_of_deepest(body: bytes) -> tuple:
    """The top-level key under which ``body`` nests deepest (to name the field when it is too deep to parse)."""
    depth = deepest = 0
    key = last_string = found = None
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token[:1] == b'"':
            last_string = token
        elif token == b":":
            if depth == 1:
                key = last_string
        elif token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest, found = depth, key
        else:
            depth -= 1
    try:
        return (json.loads(found),) if found else ()
    except ValueError:
        return ()


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded in size and depth, refusing what cannot be stored (see the module)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.GRACE_API_MAX_BODY_BYTES  # a declared length over it was refused by DeclaredBodyLimit
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(_too_large(limit))
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError:
            problem = f"nests objects and arrays more than {settings.GRACE_API_MAX_JSON_DEPTH} levels deep"
            raise _refuse(_top_key_of_deepest(body), problem) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check(data, max_depth=settings.GRACE_API_MAX_JSON_DEPTH, max_key_length=settings.GRACE_API_MAX_KEY_LENGTH)
        return data
