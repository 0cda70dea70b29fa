"""Before and after: what an audited change records."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.forms.models import model_to_dict

from grace_site.masking import mask_data


def diff(before: dict | None, after: dict | None) -> dict:
    """What changed, as ``{field: {"before", "after"}}`` (a new object has no before, a deleted one no after)."""
    before, after = before or {}, after or {}
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in {**before, **after}
        if before.get(key) != after.get(key)
    }


def values(obj: models.Model, *, masked: tuple[str, ...] = (), masked_urls: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object's editable fields, many-to-many ones as sorted ids, JSON-safe, credentials masked."""
    data = model_to_dict(obj)
    for field in obj._meta.many_to_many:
        if obj.pk is not None:
            data[field.name] = sorted(getattr(obj, field.name).values_list("pk", flat=True))
    data = json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))
    return mask_data(data, fields=masked, url_fields=masked_urls)
