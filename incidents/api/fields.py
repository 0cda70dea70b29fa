from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from incidents import normalize


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of converting them."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LabelsField(serializers.DictField):
    """A flat map of label name to string, within the intake's count and size caps."""

    def __init__(self, *, annotations: bool = False, **kwargs):
        kwargs.setdefault("child", StrictCharField(allow_blank=True, trim_whitespace=False))
        self.annotations = annotations
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            return normalize.clean_labels(value, annotations=self.annotations)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.message_dict.values())[0]) from None
