"""Server-side prepared statements, for the few statements every step runs."""

import hashlib
import re
import weakref

from django.db import connection, connections

# The names prepared on each open psycopg2 connection: a statement lasts as long as
# its connection (a rollback keeps it), and a new connection starts with none.
_prepared_on: "weakref.WeakKeyDictionary[object, set[str]]" = weakref.WeakKeyDictionary()


def prepared(sql: str, params: list) -> tuple[str, list]:
    """`sql` (PostgreSQL, `%s` placeholders) as the EXECUTE of a statement prepared on
    the current connection, prepared there on first use; pass the result to
    `cursor.execute` or `Model.objects.raw`.

    psycopg2 sends each statement as text, and PostgreSQL plans it anew every time:
    for the claim and the result of a step (data-modifying CTEs) planning took four
    times as long as executing (0.17 against 0.04 ms). A prepared statement is parsed
    once per connection and soon runs on a cached generic plan.

    `sql` must name the columns it returns: a `*` would change with the table, and
    PostgreSQL fails a prepared statement whose result changes ("cached plan must
    not change result type"). It needs the connection to itself between calls, so
    a pooler in front of PostgreSQL must pool sessions, not transactions.
    """
    connection.ensure_connection()
    names = _prepared_on.setdefault(connection.connection, set())
    name = f"hive_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}"
    if name not in names:
        numbers = iter(range(1, len(params) + 1))
        text = re.sub(r"%[s%]", lambda m: "%" if m[0] == "%%" else f"${next(numbers)}", sql)
        with connection.cursor() as cursor:
            cursor.execute(f"PREPARE {name} AS {text}")
        names.add(name)
    return f"EXECUTE {name}({', '.join(['%s'] * len(params))})", params


def connections_name(*, name: str) -> None:
    """Name this process's PostgreSQL connections `name` from now on, so operators
    (and the tests) count each process's connections in pg_stat_activity's
    application_name. Call it before the process opens its first connection; one
    already open is closed so the next carries the name."""
    for alias in connections:
        wrapper = connections[alias]
        if wrapper.vendor != "postgresql":
            continue
        # libpq cuts application_name at 63 bytes (NAMEDATALEN).
        wrapper.settings_dict.setdefault("OPTIONS", {})["application_name"] = name[:63]
        if wrapper.connection is not None:
            wrapper.close()


def filter_given(queryset, **lookups):
    """`queryset` filtered by the lookups given: an empty value (a filter left blank in
    the API or on a page) filters nothing."""
    return queryset.filter(**{lookup: value for lookup, value in lookups.items() if value})
