"""The OpenAPI schema documents every status an operation can answer, not only its success.

Derived from the operation itself, so no view has to repeat them:

| status | documented when |
| --- | --- |
| 400 | the operation takes a body or query parameters (field errors, or ``detail`` for bad JSON) |
| 401 | a permission class asks for an authenticated caller |
| 403 | a permission class checks more than authentication |
| 404 | the path names an object (unknown ids, and ids the caller may not view) |
| 413, 415 | the operation takes a body (too large; not ``application/json``) |
| 429 | always: throttles answer it with ``Retry-After`` |

409 and 503 depend on what the operation does: views declare them (``grace_site.api.statuses``).
"""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework.permissions import AllowAny, IsAuthenticated

from grace_site.api import error

FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Bad input: field name to its errors, or ``detail`` when the body is not JSON.",
)
ERRORS = {
    "400": FIELD_ERRORS,
    "401": error("No credentials, or wrong ones."),
    "403": error("Authenticated, but without the permission this needs."),
    "404": error("No such object, or one you may not view."),
    "413": error("The request body is over GRACE_API_MAX_BODY_BYTES."),
    "415": error("The body is not application/json."),
    "429": error("Rate limited: retry after the Retry-After header's seconds."),
}


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for code in self._error_statuses(operation):
            if code not in responses:
                responses[code] = self._get_response_for_code(ERRORS[code], code)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_statuses(self, operation: dict) -> list[str]:
        places = {parameter.get("in") for parameter in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        permissions = [type(permission) for permission in self.view.get_permissions()]
        codes = ["429"]
        if has_body or "query" in places:
            codes.append("400")
        if any(cls is not AllowAny for cls in permissions):
            codes.append("401")
        if any(cls not in (AllowAny, IsAuthenticated) for cls in permissions):
            codes.append("403")
        if "path" in places:
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        return codes
