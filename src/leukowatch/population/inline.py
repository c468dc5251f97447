"""Small relations made in Python (the knowledge answers, the medicines named, the cyclic verdicts), as
named tables each engine creates its own way before running a query that reads them.

Why not Ibis memtables: a memtable is a pyarrow (or pandas) table, and building any pyarrow array
imports pandas, which cost every DuckDB screen a quarter of a second of its fixed cost (measured: the
seven memtables of a 2,000-row screen took 0.33 of its 1.3 s). Here a relation is only its rows and
schema: DuckDB creates it from Python lists, Spark as a one-row JSON literal unpacked by
`inline(from_json(...))`, which it broadcasts. NULLs stay NULLs on both (a pandas round trip turned
a NULL string into 'NaN' on Spark).

The name is a digest of the schema and rows, so the same knowledge gives the same table and an engine
creates each one once per connection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir

#: Column types a relation may use, with their names in each engine's SQL: one vocabulary for both.
COLUMN_TYPES: dict[str, dict[str, str]] = {
    "string": {"duckdb": "VARCHAR", "spark": "STRING"},
    "float64": {"duckdb": "DOUBLE", "spark": "DOUBLE"},
    "int64": {"duckdb": "BIGINT", "spark": "BIGINT"},
    "boolean": {"duckdb": "BOOLEAN", "spark": "BOOLEAN"},
    "date": {"duckdb": "DATE", "spark": "DATE"},
    "timestamp": {"duckdb": "TIMESTAMP", "spark": "TIMESTAMP"},
}
_PREFIX = "lw_inline_"


@dataclass(frozen=True)
class InlineTable:
    """A relation's name, column types (keys of COLUMN_TYPES) and rows (tuples in column order)."""

    name: str
    schema: dict[str, str]
    rows: tuple[tuple[Any, ...], ...]

    def columns(self) -> dict[str, list[Any]]:
        """The rows as one list per column (how DuckDB takes them as parameters)."""
        return {c: [r[i] for r in self.rows] for i, c in enumerate(self.schema)}

    def sql_types(self, engine: str) -> dict[str, str]:
        return {c: COLUMN_TYPES[t][engine] for c, t in self.schema.items()}


#: Every relation made in this process, by name. They are few and small (knowledge answers, a few hundred
#: rows) and their names are digests of their contents, so the same table is kept once.
_TABLES: dict[str, InlineTable] = {}


def inline_table(rows: list[dict[str, Any]], schema: dict[str, str]) -> ir.Table:
    """A relation of `rows` (dicts; a missing key is NULL) with `schema` (column -> a COLUMN_TYPES key)."""
    unknown = sorted(set(schema.values()) - set(COLUMN_TYPES))
    if unknown:
        raise ValueError(f"inline tables take {sorted(COLUMN_TYPES)} columns, not {unknown}")
    data = tuple(tuple(r.get(c) for c in schema) for r in rows)
    digest = hashlib.blake2b(repr((sorted(schema.items()), data)).encode(), digest_size=12).hexdigest()
    table = InlineTable(_PREFIX + digest, dict(schema), data)
    _TABLES.setdefault(table.name, table)
    return ibis.table(ibis.schema(schema), name=table.name)


def tables_read_by(expr: ir.Expr) -> list[InlineTable]:
    """The inline tables an expression reads, for the engine to create before running it."""
    names = {op.name for op in expr.op().find(ops.UnboundTable) if op.name.startswith(_PREFIX)}
    return [_TABLES[n] for n in sorted(names)]
