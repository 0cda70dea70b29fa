from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError


def validate_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known time zone (e.g. UTC, Europe/Paris)") from None


def validate_weekdays(value) -> None:
    if not isinstance(value, list) or any(
        not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 6 for day in value
    ):
        raise ValidationError("weekdays must be a list of integers 0 (Monday) to 6 (Sunday)")


def validate_string_list(value) -> None:
    if not isinstance(value, list) or any(not isinstance(item, str) or not item.strip() for item in value):
        raise ValidationError('must be a list of non-empty strings, e.g. ["production"]')
