"""The two backends a screen runs on: embedded DuckDB (default) and Spark (local or a cluster).

Both get the same Ibis expressions; this module only knows how to open files, write Parquet and
hand back small results. DuckDB runs with a memory limit and a spill directory so files larger
than RAM stream through; Spark writes Parquet directories as usual.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir

from ..model import InputError
from .inline import InlineTable, tables_read_by

if TYPE_CHECKING:
    import pandas as pd


#: One output to write: its expression, path and category columns (`Engine.to_parquet`).
Write = tuple[ir.Table, Path, dict[str, tuple[str, ...]] | None]


def pandas_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A small pandas result as plain Python rows: None for missing, datetimes as `datetime`."""
    df = df.astype(object).where(df.notna(), None)
    return [{k: v.to_pydatetime() if hasattr(v, "to_pydatetime") else v for k, v in row.items()}
            for row in df.to_dict("records")]


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Engine:
    name = "engine"
    con: Any
    #: Whether text values are parsed in column steps (inputs.with_numbers): DuckDB, where one inlined
    #: expression was evaluated hundreds of times per row; not Spark, whose plans of those steps are slow.
    parse_in_steps = True

    def read_parquet(self, paths: list[Path], row_number: bool = False) -> ir.Table:
        raise NotImplementedError

    def read_csv(self, path: Path) -> ir.Table:
        raise NotImplementedError

    def read_duckdb_table(self, path: Path, table: str, workdir: Path) -> ir.Table:
        raise NotImplementedError

    def duckdb_tables(self, path: Path) -> set[str]:
        import duckdb

        with duckdb.connect(str(path), read_only=True) as c:
            return {r[0].lower() for r in c.execute("SELECT table_name FROM information_schema.tables").fetchall()}

    def to_parquet(self, expr: ir.Table, path: Path, categories: dict[str, tuple[str, ...]] | None = None) -> None:
        """Write `expr` as Parquet. `categories` names string columns whose every value is in a known short
        list (an engine may encode them as such; the file still holds plain strings)."""
        raise NotImplementedError

    def output_path(self, outdir: Path, name: str) -> Path:
        return outdir / f"{name}.parquet"

    def materialize(self, expr: ir.Table, name: str, workdir: Path) -> ir.Table:
        """Compute an intermediate relation once for the queries that read it several times."""
        path = workdir / f"{name}.parquet"
        self.to_parquet(expr, path)
        return self.read_parquet([path])

    def materialize_all(self, exprs: dict[str, ir.Table], workdir: Path) -> dict[str, ir.Table]:
        """`materialize` of relations none of which reads another (name -> expr), one after another here."""
        return {name: self.materialize(expr, name, workdir) for name, expr in exprs.items()}

    def buckets(self, rows: int) -> int:
        """Into how many buckets of persons to split `rows` input rows (Spark partitions by itself)."""
        return 1

    def part_path(self, outdir: Path, name: str, k: int) -> Path:
        """Where bucket `k` writes its part of output `name` (a directory of parts; one bucket: the output)."""
        return self.output_path(outdir, name)

    def prepare(self, expr: ir.Expr) -> None:
        """Create the inline tables (population.inline) `expr` reads that this engine has not made yet, and
        hand Ibis's own memtables to the backend: call it before running any query."""
        made: set[str] = self.__dict__.setdefault("_inline_made", set())
        for table in tables_read_by(expr):
            if table.name not in made:
                self.create_inline(table)
                made.add(table.name)
        self.con._register_in_memory_tables(expr)

    def create_inline(self, table: InlineTable) -> None:
        """Make `table` a relation of this backend under its name (each engine its own way)."""
        raise NotImplementedError

    def execute(self, expr: ir.Expr) -> Any:
        self.prepare(expr)
        return self.con.execute(expr)

    def records(self, expr: ir.Expr) -> list[dict[str, Any]]:
        """A small result as plain Python rows (None for missing, datetimes as `datetime`): what the screen
        brings back into Python (codes, counts, the summary, cyclic candidates)."""
        return pandas_records(self.execute(expr.as_table()))

    def scalar(self, expr: ir.Scalar) -> Any:
        """One value (a count, a sum), None when the aggregate has no rows to work on."""
        return next(iter(self.records(expr)[0].values()))

    def to_parquet_all(self, writes: dict[str, Write]) -> dict[str, float]:
        """Write outputs none of which reads another (name -> (expr, path, categories)); returns the seconds
        each took. One after another here: DuckDB spreads every query over all its threads already."""
        took: dict[str, float] = {}
        for name, (expr, path, categories) in writes.items():
            t0 = time.perf_counter()
            self.to_parquet(expr, path, categories)
            took[name] = time.perf_counter() - t0
        return took

    def records_all(self, exprs: list[ir.Expr]) -> list[list[dict[str, Any]]]:
        """`records` of several small queries none of which reads another (the summary's), in order."""
        return [self.records(e) for e in exprs]

    def close(self) -> None:
        """Release the backend (Spark sessions are shared and left running)."""


#: Input rows' worth of DuckDB memory per bucket of persons: sets the bucket count. Buckets are the last resort,
#: not the first: DuckDB's own operators spill what does not fit, and every further bucket scans the whole
#: input again and filters it by a hash that misleads DuckDB's join estimates. Measured at 30M rows with
#: --memory-limit 2GB (bench/screen.py data, quiet machine): one bucket 42.7 s at a 1.70 GB peak, two
#: buckets 56.9 s, three 48.3 s. At 40 bytes a row, 2GB screens about 37M rows in one bucket.
BUCKET_BYTES_PER_ROW = 40
#: Part of a --memory-limit kept back for the Python side of the screen (interpreter, Ibis, pandas: about
#: 170 MB) and for what DuckDB's own accounting leaves out (allocator slack, Parquet writer buffers);
#: measured: 2GB gives DuckDB 1.4 GiB and the 30M-row screen peaks at 1.7 GB.
_UNCOUNTED_SHARE = 0.25
#: The smallest budget accepted: below it the Python side alone would not fit.
MIN_BUDGET = 256 * 2**20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$", re.I)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
          "TIB": 2**40}


@contextmanager
def _unreadable(paths: Sequence[Path], kind: str) -> Iterator[None]:
    """DuckDB's error on a file it cannot read (binary data given as CSV, a damaged Parquet footer) as an
    InputError naming the file, with DuckDB's first line of explanation: the CLI says it and exits 2."""
    import duckdb

    try:
        yield
    except duckdb.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (or another of {len(paths)} files)"
        raise InputError(where, f"cannot be read as {kind}: {first}") from None


def parse_size(text: str, field: str = "memory_limit") -> int:
    """'2GB', '1.5 GiB', '500MB' -> bytes (a bare number is bytes)."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(field, f"{text!r} is not a size; write e.g. 2GB or 500MB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])


class DuckDBEngine(Engine):
    """Embedded DuckDB: `memory_limit` caps the process, `temp_directory` takes what does not fit.

    The limit is for the whole screen, as an operator means it: DuckDB gets three quarters of it, the
    rest is for the Python side and for memory DuckDB does not count.
    """

    name = "duckdb"

    def __init__(self, memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: Path | None = None) -> None:
        self.con = ibis.duckdb.connect()
        #: A spill folder made here is removed on close (one given by the caller stays theirs).
        self._own_tmp = temp_directory is None
        self._tmp = temp_directory or Path(tempfile.mkdtemp(prefix="leukowatch-duckdb-"))
        settings = {"TimeZone": "UTC", "temp_directory": str(self._tmp), "preserve_insertion_order": "false",
                    "enable_progress_bar": "false",  # screen draws its own progress
                    # The pipeline joins the large relation (results) on the left and the small one (persons,
                    # ranges, codes) on the right, where DuckDB builds its hash table. DuckDB underestimates
                    # the filtered, unioned results and swapped the sides of `graded`'s join with the persons:
                    # it built on 3M results and probed with 75k persons, a one-row-group scan, so the whole
                    # output streamed from one thread (3M absolute counts: graded from 1.85 to 1.14 s, screen
                    # from 4.5 to 3.7 s without the swap; the differential input from 4.1 to 4.0 s; no step slower).
                    "disabled_optimizers": "build_side_probe_side"}
        if memory_limit:
            budget = parse_size(memory_limit)
            if budget < MIN_BUDGET:
                raise InputError("memory_limit", f"{memory_limit} is less than the screen itself needs "
                                                 f"(at least {MIN_BUDGET // 2**20} MiB)")
            settings["memory_limit"] = f"{int(budget * (1 - _UNCOUNTED_SHARE)) // 2**20}MiB"
        if threads:
            settings["threads"] = str(threads)
        for key, value in settings.items():
            self.con.raw_sql(f"SET {key} = {_quote(value)}")
        # DuckDB reports its limit rounded ('1.3 GiB'): the value set here is the exact one
        self.memory_bytes = (parse_size(settings["memory_limit"]) if "memory_limit" in settings
                             else self._limit_bytes())
        self._attached: dict[Path, str] = {}
        self._views = 0

    def _limit_bytes(self) -> int:
        """DuckDB's memory limit in bytes (it reports it as text, e.g. '1.4 GiB')."""
        text = self.con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
        return parse_size(text.replace(" ", ""))

    def _table(self, name: str) -> ir.Table:
        """A table or view of this connection as an Ibis table. Ibis's `con.table()` reads DuckDB's DESCRIBE as
        an Arrow table, which imports pyarrow and numpy (0.15 s of every screen, which uses neither): the same
        DESCRIBE is read here as plain rows and typed by Ibis's own DuckDB type mapper."""
        mapper = self.con.compiler.type_mapper
        described = self.con.con.execute(f'DESCRIBE "{name}"').fetchall()
        schema = ibis.schema({col: mapper.from_string(typ, nullable=null == "YES")
                              for col, typ, null, *_ in described})
        return ops.DatabaseTable(name, schema=schema, source=self.con, namespace=ops.Namespace()).to_expr()

    def _sql(self, query: str) -> ir.Table:
        """A relation from SQL via a view: Ibis 12's `con.sql()` calls `fetch_arrow_table`, which DuckDB 2
        removed, while `con.table()` on a view works."""
        self._views += 1
        name = f"lw_src_{self._views}"
        self.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {query}")
        return self._table(name)

    def _read_parquet(self, paths: list[Path], row_number: bool = False) -> ir.Table:
        with _unreadable(paths, "Parquet"):
            return self._parquet_view(paths, row_number)

    def _parquet_view(self, paths: list[Path], row_number: bool) -> ir.Table:
        files = "[" + ", ".join(_quote(p) for p in paths) + "]"
        if row_number and len(paths) == 1:
            return self._sql(f"SELECT * EXCLUDE (file_row_number), file_row_number::BIGINT AS _rn "
                             f"FROM read_parquet({files}, file_row_number = true)")
        if row_number:
            # file index x 2^40 + row within the file: a reading order that survives parallel scans
            return self._sql(
                f"SELECT * EXCLUDE (file_row_number, filename), "
                f"(list_position({files}, filename) * 1099511627776 + file_row_number)::BIGINT AS _rn "
                f"FROM read_parquet({files}, file_row_number = true, filename = true, union_by_name = true)")
        return self._sql(f"SELECT * FROM read_parquet({files}, union_by_name = true)")

    def read_csv(self, path: Path) -> ir.Table:
        """A CSV is parsed once into a temporary table (the screen scans its input several times)."""
        self._views += 1
        name = f"lw_csv_{self._views}"
        with _unreadable([path], "CSV"):
            self.con.raw_sql(f"CREATE TEMP TABLE {name} AS SELECT *, row_number() OVER () AS _rn "
                             f"FROM read_csv({_quote(path)}, all_varchar = true, header = true)")
        return self._table(name)

    def read_duckdb_table(self, path: Path, table: str, workdir: Path) -> ir.Table:
        alias = self._attached.get(path)
        if alias is None:
            alias = f"src{len(self._attached)}"
            self.con.raw_sql(f"ATTACH {_quote(path)} AS {alias} (READ_ONLY)")
            self._attached[path] = alias
        return self._sql(f"SELECT *, row_number() OVER () AS _rn FROM {alias}.main.{table}")

    def to_parquet(self, expr: ir.Table, path: Path, categories: dict[str, tuple[str, ...]] | None = None) -> None:
        """COPY to Parquet. Category columns are cast to DuckDB ENUMs first: its Parquet writer then takes
        the dictionary as it is instead of hashing every string (a quarter of the time of the 30M-row
        `graded` file). A value outside its list fails the cast loudly; it is never dropped."""
        self.prepare(expr)  # the knowledge relations first
        sql = self.con.compile(expr)
        cast = [f"CAST({c} AS ENUM({', '.join(_quote(v) for v in values)})) AS {c}"
                for c, values in (categories or {}).items() if c in expr.columns]
        if cast:
            sql = f"SELECT * REPLACE ({', '.join(cast)}) FROM ({sql})"
        self.con.raw_sql(f"COPY ({sql}) TO {_quote(path)} (FORMAT parquet, COMPRESSION zstd)")

    def records(self, expr: ir.Expr) -> list[dict[str, Any]]:
        """Rows straight from DuckDB's cursor, not through a pandas frame as Ibis would: with the inline tables,
        a DuckDB screen never imports pandas (0.3 s of a 3M-row screen's 5 s was that import)."""
        table = expr.as_table()
        self.prepare(table)
        cursor = self.con.raw_sql(self.con.compile(table))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def create_inline(self, table: InlineTable) -> None:
        """A temporary table from one list parameter per column, unnested side by side (no pyarrow)."""
        types = table.sql_types("duckdb")
        if not table.rows:
            cols = ", ".join(f'"{c}" {t}' for c, t in types.items())
            self.con.raw_sql(f'CREATE TEMP TABLE "{table.name}" ({cols})')
            return
        cols = ", ".join(f'unnest(${i}::{t}[]) AS "{c}"' for i, (c, t) in enumerate(types.items(), start=1))
        self.con.con.execute(f'CREATE TEMP TABLE "{table.name}" AS SELECT {cols}', list(table.columns().values()))

    def buckets(self, rows: int) -> int:
        """Enough buckets that one bucket's working set (its rows, draws, sorts) fits the memory limit: a
        spilled hash table or sort costs several times an extra scan of the input."""
        return max(1, -(-rows * BUCKET_BYTES_PER_ROW // self.memory_bytes))

    def part_path(self, outdir: Path, name: str, k: int) -> Path:
        folder = self.output_path(outdir, name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"part-{k:05d}.parquet"

    def read_parquet(self, paths: list[Path], row_number: bool = False) -> ir.Table:
        """Files, or output directories (all their parts)."""
        return self._read_parquet([p / "*.parquet" if p.is_dir() else p for p in paths], row_number)

    def materialize(self, expr: ir.Table, name: str, workdir: Path) -> ir.Table:
        """A temporary table: DuckDB's own storage under the memory limit (spilled to `temp_directory`),
        cheaper to write and read back than a Parquet file."""
        self.prepare(expr)
        self.con.raw_sql(f"CREATE OR REPLACE TEMP TABLE lw_{name} AS {self.con.compile(expr)}")
        return self._table(f"lw_{name}")

    def close(self) -> None:
        self.con.disconnect()
        if self._own_tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


_SPARK_SESSIONS: dict[str, Any] = {}


#: Masters on this machine: the driver then binds to loopback too (a cluster on 127.0.0.1, as the test runs).
_LOOPBACK = ("local", "spark://127.0.0.1:", "spark://localhost:")
#: HotSpot compiles no method over 8,000 bytes of bytecode; the whole-stage generated method of the stage that
#: grades every result (its CASE chains, about 12 kB) then ran interpreted. Measured at 3M rows on local[2]:
#: that stage's task CPU from 25 s to 11 s with the flag (Spark's own fallback, codegen.hugeMethodLimit=8000, gave
#: 15 s). The first option lets a JVM without the flag start anyway.
#:
#: The Tier4 thresholds (10 times HotSpot's defaults) keep C2, the optimising compiler, to the code that stays
#: hot: a screen plans and runs some sixty queries, and C2 compiled so much of Spark's analyser, optimiser and
#: code generator on the way that at 300k rows its compiler threads took 24 CPU seconds beside 9 seconds of
#: tasks, on two cores (-XX:+CITime: 2,427 methods, 40 s of C2). Measured on local[2] (JVM thread CPU from
#: /proc, a loaded machine): 300k rows, compiler from 23.9 to 17.0 s, whole screen from 51.8 to 44.0 CPU s; 3M rows,
#: compiler from 36.2 to 26.7 s, tasks from 35.2 to 36.2 s. Higher thresholds (30 times) saved more at 300k (12.7 s of
#: compiler) but the hot loops of the 3M-row tasks reached C2 later (38.9 s of tasks; the screen about 3 s
#: slower in two pairs of bench runs); C1 alone (TieredStopAtLevel=1) cut the compiler to 3-5 s and made the
#: 3M-row tasks 1.8 times slower (62 s), for both the screen and the plain PySpark job of bench/screen.py.
SPARK_JVM_OPTIONS = ("-XX:+IgnoreUnrecognizedVMOptions -XX:-DontCompileHugeMethods -XX:Tier4InvocationThreshold=50000 "
                     "-XX:Tier4MinInvocationThreshold=6000 -XX:Tier4CompileThreshold=150000 "
                     "-XX:Tier4BackEdgeThreshold=400000")
#: Heap of a local driver, which is also its executor: at Spark's default 1g the episode window over 3M rows
#: spent 238 of its 266 task seconds collecting garbage beside the checkpointed draws; at 2g, 0.3 s.
LOCAL_DRIVER_MEMORY = "2g"
#: Relations up to this size are broadcast into joins (Spark's default is 10 MB). At 3M rows the series with a
#: low (10 MiB) were just over it, so the episode window's semi join shuffled and sorted all 3M graded rows
#: instead of only those series; the persons of a 30M-row input (about 45 MB) still fit.
BROADCAST_BYTES = 64 * 2**20


def spark_session(master: str = "local[2]", shuffle_partitions: int | None = None) -> Any:
    """A SparkSession (one per master per process): UI off, UTC, adaptive query execution (it coalesces the
    shuffle partitions of small stages and turns joins with small sides into broadcasts at run time), bound
    to loopback for local masters and clusters on 127.0.0.1."""
    if master in _SPARK_SESSIONS:
        return _SPARK_SESSIONS[master]
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(master).appName("leukowatch-screen")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.ansi.enabled", "false")
               .config("spark.sql.adaptive.enabled", "true")
               .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
               .config("spark.sql.adaptive.autoBroadcastJoinThreshold", str(BROADCAST_BYTES))
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.extraJavaOptions", SPARK_JVM_OPTIONS)
               .config("spark.executor.extraJavaOptions", SPARK_JVM_OPTIONS))
    if master.startswith(_LOOPBACK):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    if master.startswith("local"):  # the driver's JVM starts here (one already running keeps its heap)
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions or 4)) \
            .config("spark.driver.memory", LOCAL_DRIVER_MEMORY)
    elif shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    _SPARK_SESSIONS[master] = session
    return session


def _teach_spark_bit_or() -> None:
    """Ibis 12 compiles the BitOr aggregate for DuckDB but has no rule for PySpark, though Spark SQL has
    had `bit_or` since 3.0; the screen's duplicate check needs it (pipeline.draws_of)."""
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    if PySparkCompiler.visit_BitOr is PySparkCompiler.visit_Undefined:  # Ibis marks every op it lacks
        def visit_BitOr(self: Any, op: Any, *, arg: Any, where: Any) -> Any:
            return self.agg.bit_or(arg, where=where)

        PySparkCompiler.visit_BitOr = visit_BitOr  # type: ignore[attr-defined]


def _teach_spark_sort_array() -> None:
    """Ibis compiles an array sort to Spark's `array_sort(a)`, which Spark runs with its default comparator as
    a lambda, interpreted for every comparison; `sort_array(a)` compares with the type's own ordering. The two
    differ only in where NULL elements go, and an array collected by an aggregate holds none (Spark's
    collect_list skips them), so only those arrays are sorted the fast way (the chronic cases' evidence:
    measured at 3M rows, see docs/population.md)."""
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    if getattr(PySparkCompiler.visit_ArraySort, "_leukowatch", False):
        return
    fallback = PySparkCompiler.visit_ArraySort

    def visit_ArraySort(self: Any, op: Any, *, arg: Any) -> Any:
        if isinstance(op.arg, ops.ArrayCollect):
            return self.f.sort_array(arg)
        return fallback(self, op, arg=arg)

    visit_ArraySort._leukowatch = True  # type: ignore[attr-defined]
    PySparkCompiler.visit_ArraySort = visit_ArraySort  # type: ignore[method-assign]


def _json_value(value: Any) -> Any:
    """A value as JSON carries it; dates and times as ISO text, which Spark reads back into its column type."""
    return value.isoformat() if isinstance(value, (datetime.date, datetime.datetime)) else value


def spark_inline_frame(session: Any, rows: Sequence[Sequence[Any]], types: dict[str, str]) -> Any:
    """Rows (tuples in the column order of `types`: column -> Spark SQL type) as a Spark DataFrame: one JSON
    text handed to the JVM as a literal and unpacked by `inline(from_json(...))` over one row. Spark sizes it
    from that one row (bytes, not megabytes), so it broadcasts it into every join, and no Python worker
    reads it. The earlier form, a SQL `VALUES` table, had Spark's parser read about 230 kB of SQL for the
    ranges table: 1.6 s in a fresh session, 0.65 s warm; this takes 0.05-0.09 s. NULL, NaN, infinities,
    quotes, big integers and dates come back as they went in (tests/test_spark_engine.py)."""
    from pyspark.sql import functions as F

    cols = list(types)
    data = json.dumps([dict(zip(cols, map(_json_value, row), strict=True)) for row in rows], allow_nan=True)
    schema = "array<struct<" + ", ".join(f"`{c}`: {t}" for c, t in types.items()) + ">>"
    return session.range(1).select(F.inline(F.from_json(F.lit(data), schema)))


class SparkEngine(Engine):
    """PySpark through Ibis's pyspark backend. Outputs are Parquet directories.

    The knowledge relations (population.inline tables of a few hundred rows) become small inline frames
    (`spark_inline_frame`): as Ibis memtables they went to Spark as pandas frames, which Spark reads
    through Python workers as an RDD of unknown size, never broadcast, so every join with them shuffled
    the data (measured: most of a screen's time).
    """

    name = "spark"
    parse_in_steps = False

    def __init__(self, master: str = "local[2]", session: Any = None, shuffle_partitions: int | None = None) -> None:
        self.session = session or spark_session(master, shuffle_partitions)
        _teach_spark_bit_or()
        _teach_spark_sort_array()
        self.con = ibis.pyspark.connect(self.session)
        self._n = 0
        #: The schema of every output this engine wrote, by path: reading it back then needs no job to infer it
        #: (Spark infers a Parquet schema by a job over the footers, about 0.25 s each, a dozen per screen).
        self._written: dict[str, Any] = {}

    def create_inline(self, table: InlineTable) -> None:
        spark_inline_frame(self.session, table.rows, table.sql_types("spark")).createOrReplaceTempView(table.name)

    def _view(self, df: Any) -> ir.Table:
        self._n += 1
        name = f"lw_src_{id(self)}_{self._n}"
        df.createOrReplaceTempView(name)
        return self.con.table(name)

    def read_parquet(self, paths: list[Path], row_number: bool = False) -> ir.Table:
        from pyspark.sql import functions as F

        reader = self.session.read
        known = self._written.get(str(paths[0])) if len(paths) == 1 else None
        if known is not None:
            reader = reader.schema(known)
        elif row_number and (len(paths) > 1 or Path(paths[0]).is_dir()):
            # inputs in several files may differ in columns (merging their schemas reads every footer)
            reader = reader.option("mergeSchema", "true")
        df = reader.parquet(*[str(p) for p in paths])
        if row_number:
            df = df.withColumn("_rn", F.monotonically_increasing_id())
        return self._view(df)

    def read_csv(self, path: Path) -> ir.Table:
        """A CSV as RFC 4180 and DuckDB read it: a quoted field may hold line breaks (Spark's default split
        such a row in two, so a value with a trailing newline lost its row) and a quote inside quotes is
        doubled (Spark's default escape is a backslash). A file is then read by one task."""
        from pyspark.sql import functions as F

        df = self.session.read.option("header", "true").option("multiLine", "true").option("escape", '"') \
            .csv(str(path))
        return self._view(df.withColumn("_rn", F.monotonically_increasing_id()))

    def read_duckdb_table(self, path: Path, table: str, workdir: Path) -> ir.Table:
        """Spark cannot read a DuckDB file: DuckDB exports the table to Parquet first (streamed)."""
        import duckdb

        out = workdir / f"{path.stem}-{table}.parquet"
        with duckdb.connect(str(path), read_only=True) as c:
            c.execute("SET TimeZone = 'UTC'")
            c.execute(f"COPY (SELECT * FROM main.{table}) TO {_quote(out)} (FORMAT parquet)")
        return self.read_parquet([out], row_number=True)

    def _frame(self, expr: ir.Table) -> Any:
        """`expr` as a Spark DataFrame, planned in the calling thread (Ibis's compiler and the engine's views
        are not meant to be shared between threads; running the planned jobs is)."""
        self.prepare(expr)
        return self.session.sql(self.con.compile(expr))

    def _write(self, df: Any, path: Path) -> float:
        t0 = time.perf_counter()
        df.write.mode("overwrite").parquet(str(path))
        self._written[str(path)] = df.schema
        return time.perf_counter() - t0

    def to_parquet(self, expr: ir.Table, path: Path, categories: dict[str, tuple[str, ...]] | None = None) -> None:
        self._write(self._frame(expr), path)

    def to_parquet_all(self, writes: dict[str, Write]) -> dict[str, float]:
        """The writes as concurrent Spark jobs (one thread each): a stage whose tasks are uneven (an input of
        three row groups read by two cores) or a gap while the driver plans the next query leaves a core
        idle, and the other outputs' tasks fill it. The seconds returned overlap."""
        frames = {name: (self._frame(expr), path) for name, (expr, path, _) in writes.items()}
        with ThreadPoolExecutor(max_workers=len(frames) or 1, thread_name_prefix="lw-write") as pool:
            took = {name: pool.submit(self._write, df, path) for name, (df, path) in frames.items()}
            return {name: job.result() for name, job in took.items()}

    def records_all(self, exprs: list[ir.Expr]) -> list[list[dict[str, Any]]]:
        """The queries as concurrent Spark jobs: each is small (a summary table), so most of its time is the
        driver planning it and the fixed cost of its one or two jobs, which overlap here."""
        from ibis.backends.pyspark.converter import PySparkPandasData

        tables = [e.as_table() for e in exprs]
        frames = [self._frame(t) for t in tables]
        with ThreadPoolExecutor(max_workers=len(frames) or 1, thread_name_prefix="lw-query") as pool:
            results = list(pool.map(lambda df: df.toPandas(), frames))
        return [pandas_records(PySparkPandasData.convert_table(df, t.schema())) for df, t in zip(results, tables, strict=True)]

    def output_path(self, outdir: Path, name: str) -> Path:
        return outdir / f"{name}.parquet"

    def materialize(self, expr: ir.Table, name: str, workdir: Path) -> ir.Table:
        """An eager local checkpoint: computed once into the executors' block stores (one job, no Parquet
        written and read back, no schema to infer again), its lineage cut so later plans stay small.

        A checkpoint small enough is marked for broadcast: Spark cannot size it before a query runs, so it
        planned every join with it (the persons, joined onto all 3M graded rows) as a shuffle, which
        adaptive execution turned into a broadcast only when the persons' shuffle finished first (when
        it did not, the 3M rows were shuffled too). Counting the checkpoint is one job over blocks in
        memory."""
        return self._view(self._checkpoint(self._frame(expr)))

    def materialize_all(self, exprs: dict[str, ir.Table], workdir: Path) -> dict[str, ir.Table]:
        """The checkpoints as concurrent jobs, planned here, one thread each: the persons and the draws each
        scan the input, whose few row groups leave a core idle at the end of each scan."""
        frames = {name: self._frame(expr) for name, expr in exprs.items()}
        with ThreadPoolExecutor(max_workers=len(frames) or 1, thread_name_prefix="lw-keep") as pool:
            kept = {name: pool.submit(self._checkpoint, df) for name, df in frames.items()}
            return {name: self._view(job.result()) for name, job in kept.items()}

    @staticmethod
    def _checkpoint(df: Any) -> Any:
        from pyspark.sql import functions as F

        df = df.localCheckpoint(eager=True)
        if df.count() * df._jdf.schema().defaultSize() <= BROADCAST_BYTES:
            df = F.broadcast(df)
        return df

    def execute(self, expr: ir.Expr) -> pd.DataFrame:
        self.prepare(expr)
        return self.con.execute(expr)


def make_engine(engine: str, *, memory_limit: str | None = None, spark_master: str | None = None,
                spark_session_: Any = None, threads: int | None = None) -> Engine:
    if engine == "duckdb":
        return DuckDBEngine(memory_limit=memory_limit, threads=threads)
    if engine == "spark":
        return SparkEngine(spark_master or "local[2]", session=spark_session_)
    raise ValueError(f"unknown engine {engine!r}; choose duckdb or spark")
