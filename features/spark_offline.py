"""Offline SELECT and INTO OUTFILE on OpenMLDB's own batch engine (HybridSE on Spark), over an
embedded store's offline Parquet files: the executor for lakes that outgrow one machine
(``FRAUDFLOW_OFFLINE_EXECUTOR=spark``, ``FRAUDFLOW_SPARK_MASTER``).

Data crosses between Python and the JVM as Parquet only (pyspark 3.2's cloudpickle cannot
pickle on Python 3.11): Spark reads the store's files and writes its results as files. Timestamps
are stored as epoch milliseconds; they enter the engine as Spark timestamps
(``timestamp_millis``) and leave it as epoch milliseconds again (``unix_millis``). On a cluster,
the store's offline directory and the OUTFILE path must be on a filesystem every executor sees.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from components.exceptions import SparkError
from components.spark import runtime
from features import dialect as d
from features.exceptions import CatalogError, FeatureStoreError
from features.offline import outfile_of
from features.schema import Column, TableSchema

SPARK_TYPES = {
    "bool": "BOOLEAN", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT",
    "float": "FLOAT", "double": "DOUBLE", "string": "STRING", "date": "DATE",
    "timestamp": "TIMESTAMP",
}
# Spark's type names (DataType.simpleString) → OpenMLDB's, to report what the engine produced.
OPENMLDB_TYPES = {
    "boolean": "bool", "smallint": "int16", "int": "int32", "bigint": "int64",
    "float": "float", "double": "double", "string": "string", "date": "date",
    "timestamp": "timestamp",
}


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def table_frame(engine: runtime.BatchEngine, schema: TableSchema,
                files: Sequence[Path | str]) -> Any:
    """A Spark DataFrame of the table's rows in OpenMLDB's types (timestamps from epoch ms)."""
    projections = []
    for column in schema.columns:
        if column.type == "timestamp":
            projections.append(f"timestamp_millis(CAST({_q(column.name)} AS BIGINT)) "
                               f"AS {_q(column.name)}")
        else:
            projections.append(f"CAST({_q(column.name)} AS {SPARK_TYPES[column.type]}) "
                               f"AS {_q(column.name)}")
    if not files:  # an empty offline table still has its columns
        nulls = [f"CAST(NULL AS {SPARK_TYPES[c.type]}) AS {_q(c.name)}" for c in schema.columns]
        return engine.spark.range(0).selectExpr(*nulls)
    try:
        source = engine.spark.read.parquet(*(str(f) for f in files))
        return source.selectExpr(*projections)
    except Exception as exc:
        raise FeatureStoreError(f"Spark cannot read the offline table {schema.name}: "
                                f"{runtime.java_message(exc)}") from None


def to_store_encoding(frame: Any) -> Any:
    """The engine's result with timestamps as epoch milliseconds, as the store keeps them."""
    projections = []
    for field in frame.schema.fields:
        name = _q(field.name)
        if field.dataType.simpleString() == "timestamp":
            projections.append(f"unix_millis({name}) AS {name}")
        else:
            projections.append(name)
    return frame.selectExpr(*projections)


def engine_types(frame: Any) -> list[Column]:
    """The result columns as the engine typed them, in OpenMLDB's type names."""
    return [Column(f.name, OPENMLDB_TYPES.get(f.dataType.simpleString(),
                                              f.dataType.simpleString()))
            for f in frame.schema.fields]


def run_select(engine: runtime.BatchEngine, stmt: d.Select, db: str, schema: TableSchema,
               files: Sequence[Path], output: list[Column]) -> tuple[list[tuple[Any, ...]], int]:
    """Run an offline SELECT on the engine: (rows, rowcount), no rows for INTO OUTFILE.

    Rows come in the engine's order (Spark gives no row order)."""
    engine.register(stmt.table, table_frame(engine, schema, files), db)
    result = to_store_encoding(engine.sql(stmt.text))
    if stmt.outfile is not None:
        write_outfile(result, stmt)
        return [], -1
    scratch = Path(tempfile.mkdtemp(prefix="fraudflow-spark-select-"))
    try:
        _write(result.write.mode("overwrite").format("parquet"), scratch / "out")
        table = pq.read_table(scratch / "out")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [c.name for c in output]
    if table.column_names != names:
        raise FeatureStoreError(f"OpenMLDB's batch engine returned columns "
                                f"{table.column_names}, the compiler expects {names}")
    rows = list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)),
                    strict=True)) if table.num_rows else []
    return rows, len(rows)


def write_outfile(result: Any, stmt: d.Select) -> None:
    """INTO OUTFILE with the options the embedded engine takes (Spark writes the part files)."""
    outfile = outfile_of(stmt)
    target = outfile.target
    if "://" not in target:  # a local path: checked here, as the embedded engine does
        folder = Path(target).resolve()
        if outfile.mode == "error_if_exists" and folder.exists() and any(folder.glob("part-*")):
            raise CatalogError(f"INTO OUTFILE: {folder} already has data (mode=error_if_exists)")
        target = str(folder)
    writer = result.write.mode("overwrite" if outfile.mode == "overwrite" else "append") \
        .format(outfile.file_format)
    if outfile.file_format == "csv":
        writer = writer.option("header", str(outfile.header).lower())
    _write(writer, target)


def _write(writer: Any, path: Path | str) -> None:
    try:
        writer.save(str(path))
    except Exception as exc:
        raise FeatureStoreError(f"OpenMLDB's batch engine failed: "
                                f"{runtime.java_message(exc)}") from None


def engine_for(master: str) -> runtime.BatchEngine:
    """The process's engine on `master` (started on first use), errors in one line."""
    try:
        return runtime.shared_engine(master)
    except SparkError:
        raise
    except Exception as exc:  # pragma: no cover - py4j/JVM failures not classified above
        raise SparkError(f"OpenMLDB's batch engine on {master}: "
                         f"{runtime.java_message(exc)}") from None
