"""Values of rows that intake's hot paths write with plain SQL, prepared exactly as the ORM prepares them.

``insert`` writes such rows and sets their ids.

``Field.get_db_prep_save`` dispatches through three or four methods per value; for a batch of new incidents
(25 columns each) that costs more than the INSERT. ``preparer`` gives, per field, a function that takes the
common values (a ``str`` for a text field, an ``int`` for an integer or a foreign key, a ``float`` for a float,
an aware ``datetime``, a JSON document) the short way, to the same result, and hands anything else to the
field's own ``get_db_prep_save``. ``tests/test_rows.py`` checks both ways give the same on each backend.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import DateField, Field

TEXT = {"CharField", "TextField", "SlugField", "EmailField", "URLField"}
INTEGER = {
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}
AUTO = {"AutoField", "BigAutoField", "SmallAutoField"}
_cache: dict[tuple, Callable[[Any], Any]] = {}


def preparer(field: Field, connection) -> Callable[[Any], Any]:
    """``value -> field.get_db_prep_save(value, connection)``, with the common values taken the short way."""
    key = (field.model, field.attname, connection.alias)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _make(field, connection)
    return found


def _make(field: Field, connection) -> Callable[[Any], Any]:
    kind = field.get_internal_type()
    alias = connection.alias
    # A backend's value adapters read settings only: the same for every connection (and thread) of an alias.
    ops = connection.ops

    def generic(value):
        return field.get_db_prep_save(value, connections[alias])

    if kind in TEXT:
        # CharField/TextField: str (a TextChoices member included) and None are stored as they are.
        return lambda value: value if value is None or isinstance(value, str) else generic(value)
    if kind in AUTO or (kind == "ForeignKey" and field.target_field.get_internal_type() in AUTO):
        return lambda value: value if value is None or type(value) is int else generic(value)
    if kind in INTEGER:
        # The backend may wrap integers by column size (psycopg's Int4, Int8 on PostgreSQL).
        adapt_integer = ops.adapt_integerfield_value
        return lambda value: adapt_integer(value, kind) if type(value) is int else generic(value)
    if kind == "FloatField":
        return lambda value: value if value is None or type(value) is float else generic(value)
    if kind == "DateTimeField":
        adapt = ops.adapt_datetimefield_value
        return lambda value: adapt(value) if type(value) is datetime and value.tzinfo is not None else generic(value)
    if kind == "JSONField":
        adapt, encoder = ops.adapt_json_value, field.encoder
        plain = (dict, list, str, int, float, bool)
        return lambda value: adapt(value, encoder) if type(value) in plain else generic(value)
    return generic


def params(instances, fields: list[Field], connection, *, add: bool = True) -> list:
    """The prepared values of ``fields`` for each of ``instances``, one row after another (``auto_now`` stamps
    set by the fields' ``pre_save``, as ``save`` and ``bulk_create`` set them)."""
    steps = [(_reader(field), preparer(field, connection)) for field in fields]
    out: list = []
    append = out.append
    for instance in instances:
        for read, prepare in steps:
            append(prepare(read(instance, add)))
    return out


def _reader(field: Field) -> Callable[[Any, bool], Any]:
    plain = type(field).pre_save is Field.pre_save
    if plain or (isinstance(field, DateField) and not (field.auto_now or field.auto_now_add)):
        # The attribute as it is: no stamp to set, no file to commit.
        attname = field.attname
        return lambda instance, add: getattr(instance, attname)
    return field.pre_save


# Rows per VALUES statement (each value a placeholder of its own).
ROWS_PER_INSERT = 200
# PostgreSQL: from this many rows on, ``insert`` uses COPY (below it, a VALUES statement short enough for psycopg
# to keep its conversion is one round trip where COPY takes two).
COPY_FROM_ROWS = 8


def insert(model, instances: list, fields: list[Field], connection) -> None:
    """INSERT ``instances`` (the values of ``fields``, prepared as ``params`` prepares them) in their order, and
    set each one's id.

    On PostgreSQL, from ``COPY_FROM_ROWS`` rows on: ``COPY ... FROM STDIN`` with ids taken from the table's
    sequence first (one round trip for them all). psycopg writes COPY rows in C, where a multi-row VALUES list
    costs a placeholder per value to convert and to quote on every call (a third of an intake consumer's time on
    a batch of new incidents, and a long statement for PostgreSQL to parse). COPY runs the table's triggers and
    constraints as INSERT does (an overlong value is refused, never cut short). Otherwise: multi-row VALUES,
    ``ROWS_PER_INSERT`` rows a statement, ids from ``RETURNING``.
    """
    if not instances:
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(instances) >= COPY_FROM_ROWS:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [table, model._meta.pk.column, len(instances)],
            )
            ids = sorted(pk for (pk,) in cursor.fetchall())
            values = params(instances, fields, connection)
            width = len(fields)
            pk_column = quote(model._meta.pk.column)
            # The model's own table and columns; the values go through COPY's own encoding. psycopg's errors
            # come out as Django's, as from ``execute``.
            copy_sql = f"COPY {table} ({pk_column}, {columns}) FROM STDIN"
            with connection.wrap_database_errors, cursor.cursor.copy(copy_sql) as copy:
                for row, pk in enumerate(ids):
                    copy.write_row([pk, *values[row * width : (row + 1) * width]])
            _set_ids(instances, [(pk,) for pk in ids], connection)
            return
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        head = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608 - the model's own table and columns
        for start in range(0, len(instances), ROWS_PER_INSERT):
            chunk = instances[start : start + ROWS_PER_INSERT]
            values = ", ".join([placeholder] * len(chunk))  # placeholders only: the values are parameters
            # RETURNING (SQLite 3.35+, PostgreSQL) gives the ids in the order of the VALUES.
            cursor.execute(f"{head}{values} RETURNING id", params(chunk, fields, connection))
            _set_ids(chunk, cursor.fetchall(), connection)


def _set_ids(instances: list, returned: list, connection) -> None:
    for instance, (pk,) in zip(instances, returned, strict=True):
        instance.pk = pk
        instance._state.adding = False
        instance._state.db = connection.alias
