"""The REST API's shared toolkit: the exception handler (and JSON 404/500 under /api/), the permission
classes, a date-time filter PostgreSQL can always compare, a serializer base that checks a model's
constraints before saving, and the error responses the schema documents.

Errors keep DRF's shape: 400 with field errors, 401/403, 404, 409 ``{"detail"}`` for "not in a state
that allows this", 503 ``{"detail"}`` when Redis (broker, breaker and limit state) is unavailable.
Apps map their own domain exceptions with ``answer()``, so grace_site imports none of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC

import django_filters
import redis
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import JsonResponse
from django.views import defaults
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import OpenApiResponse
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission, DjangoModelPermissions
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Not in a state that allows this."
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A component GRACE needs is unavailable."
    default_code = "unavailable"


# --- domain exceptions --------------------------------------------------------------------------

_ANSWERS: list[tuple[type[BaseException], int, str]] = []


def answer(exc_class: type[BaseException], status_code: int, detail: str = "{exc}") -> None:
    """Answer ``exc_class`` raised by a view with ``status_code`` and ``{"detail": detail}``.

    ``detail`` may use ``{exc}`` (the exception's text). Registering the same pair again changes nothing.
    """
    entry = (exc_class, status_code, detail)
    if entry not in _ANSWERS:
        _ANSWERS.append(entry)


def _field_errors(exc: DjangoValidationError) -> dict:
    """Django's errors in DRF's shape: field name to messages, ``non_field_errors`` for the rest."""
    if not hasattr(exc, "error_dict"):
        return {"non_field_errors": exc.messages}
    errors = dict(exc.message_dict)
    if "__all__" in errors:
        errors["non_field_errors"] = errors.pop("__all__")
    return errors


def _protected(exc: ProtectedError) -> str:
    counts = Counter(obj._meta.verbose_name_plural for obj in exc.protected_objects)
    users = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    return f"it is still referred to by {users}: it cannot be deleted"


def _redis_down(exc: Exception) -> str:
    return (
        f"Redis is unavailable ({type(exc).__name__}: {exc}). Anything this request saved is kept, and work "
        "it handed to the workers is sent again by the reaper once Redis is back."
    )


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, exceptions.APIException):
        return exc
    for exc_class, status_code, detail in _ANSWERS:  # registered by the apps: the most specific
        if isinstance(exc, exc_class):
            translated = exceptions.APIException(detail.format(exc=exc))
            translated.status_code = status_code
            return translated
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(_field_errors(exc))
    if isinstance(exc, ProtectedError):
        return Conflict(_protected(exc))
    if isinstance(exc, BrokerError | redis.RedisError):
        logger.warning("answering 503: %s", exc)
        return Unavailable(_redis_down(exc))
    return exc


def exception_handler(exc, context):
    """DRF's handler, after turning Django and domain exceptions into API answers.

    A 400 body is always an object: a bare list of messages becomes ``{"non_field_errors": [...]}``.
    """
    response = drf_exception_handler(_translate(exc), context)
    if response is not None and response.status_code == 400 and not isinstance(response.data, dict):
        response.data = {"non_field_errors": response.data}
    return response


def page_not_found(request, exception):
    """Django's 404 (a URL no route matches): JSON under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """Django's 500: JSON under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error: it is logged; please report it."}, status=500)
    return defaults.server_error(request)


# --- pagination and filters -------------------------------------------------------------------------


class Pagination(LimitOffsetPagination):
    """``limit`` and ``offset``, with ``limit`` capped (an unbounded one reaches the database as a LIMIT
    neither backend can take: SQLite's "datatype mismatch", PostgreSQL's "bigint out of range")."""

    max_limit = 1000


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, converted to UTC: PostgreSQL refuses offsets beyond 15:59 (Python allows 23:59)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Out of range once converted to UTC.", code="invalid") from None


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO date-time filter, compared in UTC (see UTCDateTimeField)."""

    field_class = UTCDateTimeField


# --- serializers ----------------------------------------------------------------------------------


class CheckedModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer that checks the model's constraints (CHECK and UNIQUE, ``Model.validate_constraints``)
    before saving, so input that breaks one is a 400 and never reaches the database as an IntegrityError.

    Declare field bounds too (``extra_kwargs``): they name the field and appear in the schema; this check
    is the net for every constraint, including those added later.
    """

    def validate(self, attrs):
        attrs = super().validate(attrs)
        model = self.Meta.model
        if self.instance is None:
            instance = model()
        else:  # a copy: the instance itself is only changed by save()
            fields = model._meta.concrete_fields
            instance = model(**{field.attname: getattr(self.instance, field.attname) for field in fields})
            instance._state.adding = False
        concrete = {field.name for field in model._meta.concrete_fields}
        for name, value in attrs.items():
            if name in concrete:
                setattr(instance, name, value)
        try:
            instance.validate_constraints()
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(_field_errors(exc)) from None
        return attrs


# --- permissions ----------------------------------------------------------------------------------


def _names_an_object(view) -> bool:
    """The request addresses one object by its id (a detail route)."""
    kwarg = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None) or "pk"
    return kwarg in (getattr(view, "kwargs", None) or {})


def _view_permission(model) -> str:
    return f"{model._meta.app_label}.view_{model._meta.model_name}"


class ModelPermissions(DjangoModelPermissions):
    """Django model permissions, with ``view_<model>`` needed for reads too.

    A user who may not view the model gets 404 for any id, so an id that exists and one that does not
    look the same to them (403 would confirm the id exists).
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        model = self._queryset(view).model
        if _names_an_object(view) and not request.user.has_perm(_view_permission(model)):
            raise exceptions.NotFound()
        return self._has_required(request, view, model)

    def _has_required(self, request, view, model) -> bool:
        return request.user.has_perms(self.get_required_permissions(request.method, model))


class ActionPermissions(ModelPermissions):
    """ModelPermissions, except that the view names what some actions need instead:

    ``action_permissions = {"cancel": ["remediation.change_healrun"]}`` (viewset action names, or
    HTTP method names in lower case for plain views). An empty list needs only the view permission
    of detail routes.
    """

    def _has_required(self, request, view, model) -> bool:
        named = getattr(view, "action_permissions", {})
        key = getattr(view, "action", None) or request.method.lower()
        if key not in named:
            return super()._has_required(request, view, model)
        required = list(named[key])
        if required:
            self.message = f"needs the {', '.join(required)} permission"
        return request.user.has_perms(required)


def requires(*perms: str) -> type[BasePermission]:
    """A permission class for views without a model: an authenticated user holding every one of ``perms``."""
    wanted = tuple(perms)

    class Requires(BasePermission):
        message = f"needs the {', '.join(wanted)} permission"

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated and request.user.has_perms(wanted))

    Requires.__name__ = Requires.__qualname__ = f"Requires({', '.join(wanted)})"
    return Requires


# --- documented answers ---------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in a sentence.")


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


CONFLICT = error("Not in a state that allows this (the detail says why).")
UNAVAILABLE = error("Redis (broker, breaker and rate-limit state) is unavailable; the detail says what was kept.")


def statuses(*codes: int) -> dict:
    """``{409: CONFLICT, 503: UNAVAILABLE}`` for ``statuses(409, 503)``: shorthand for extend_schema."""
    known = {409: CONFLICT, 503: UNAVAILABLE}
    return {code: known[code] for code in codes}
