"""The hand-written UPDATE and INSERT statements of the hot paths (a step's claim and
result, a batch of messages sent or handled), where the ORM would cost a second round
trip to read back what it wrote, or build model instances for rows it never reads.

Only quoted names are formatted into the SQL; every value is a parameter (`%s`). The
values go in as given: a caller that writes a model's fields prepares them for the
database first (`Field.get_db_prep_save`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import connection


@dataclass(frozen=True)
class Add:
    """A column's new value is its old one plus `n` (a counter: tries, pending needs)."""

    n: int


@dataclass(frozen=True)
class Expression:
    """A column's new value as SQL, with a `%s` for each of `params`."""

    sql: str
    params: tuple = ()


def case(column: str, values: Mapping) -> Expression:
    """`CASE column WHEN key THEN value ... END`: one value per row in one UPDATE."""
    whens = " ".join(["WHEN %s THEN %s"] * len(values))
    pairs = tuple(item for pair in values.items() for item in pair)
    return Expression(f"CASE {connection.ops.quote_name(column)} {whens} END", pairs)


def update_sql(
    table: str,
    *,
    values: Mapping[str, object],
    where: Mapping[str, object],
    after: str = "",
    returning: Sequence[str] | None = None,
) -> tuple[str, list]:
    """`UPDATE table SET ... WHERE ... RETURNING ...` and its parameters.

    `values` maps columns to a value, an `Add` or an `Expression`; `where` maps columns
    to a value (=), a list (IN) or None (IS NULL), all of them to match. With `after`
    (the name of a CTE), it changes nothing unless that CTE returned a row, and runs
    after it. It returns every column (`*`) unless `returning` names them.
    """
    qn = connection.ops.quote_name
    sets, params = [], []
    for name, value in values.items():
        column = qn(name)
        if isinstance(value, Add):
            sets.append(f"{column} = {column} + %s")
            params.append(value.n)
        elif isinstance(value, Expression):
            sets.append(f"{column} = {value.sql}")
            params.extend(value.params)
        else:
            sets.append(f"{column} = %s")
            params.append(value)
    conditions = []
    for name, value in where.items():
        column = qn(name)
        if value is None:
            conditions.append(f"{column} IS NULL")
        elif isinstance(value, list):
            conditions.append(f"{column} IN ({', '.join(['%s'] * len(value))})")
            params.extend(value)
        else:
            conditions.append(f"{column} = %s")
            params.append(value)
    if after:
        conditions.append(f"EXISTS (SELECT 1 FROM {after})")  # noqa: S608 - a CTE's name
    sql = (
        f"UPDATE {qn(table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {' AND '.join(conditions)} RETURNING {_returning(returning)}"
    )
    return sql, params


def insert_sql(
    table: str, *, columns: Sequence[str], rows: Sequence[Sequence], returning: Sequence[str]
) -> tuple[str, list]:
    """One multi-row `INSERT INTO table (columns) VALUES ... RETURNING ...` and its
    parameters. PostgreSQL and SQLite both return the rows in the order given."""
    qn = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(columns))})"
    sql = (
        f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) "  # noqa: S608
        f"VALUES {', '.join([row] * len(rows))} RETURNING {_returning(returning)}"
    )
    return sql, [value for entry in rows for value in entry]


def _returning(columns: Sequence[str] | None) -> str:
    if columns is None:
        return "*"
    return ", ".join(connection.ops.quote_name(c) for c in columns)
