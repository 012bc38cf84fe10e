"""OpenMLDB's own batch engine (``openmldb-batch``: HybridSE on Spark), run from this process
through pyspark and py4j: no OpenMLDB server, no ZooKeeper, no Spark distribution.

Everything it needs comes from registries: pyspark 3.2.1 (the ``[spark]`` install extra; OpenMLDB
0.9 is built for Spark 3.2) and, from Maven Central through ``pom.xml`` beside this module, the
batch and common jars and the native jar whose ``libsql_jsdk.so`` the engine loads. The cache
(``$FRAUDFLOW_SPARK_CACHE``, default ``~/.cache/fraudflow/openmldb-spark``, ~1.3 GB) holds
``m2/`` (Maven's local repository: the jars are used where Maven puts them) and ``native/``
(the unpacked library). One engine per process: Spark allows one context per JVM.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components import maven, process
from components.exceptions import SparkError

log = logging.getLogger(__name__)

#: Env var naming the cache directory shared by worktrees, test sessions and CI runs.
CACHE_ENV = "FRAUDFLOW_SPARK_CACHE"
OPENMLDB_VERSION = "0.9.0"
PYSPARK_VERSION = "3.2.1"
DEFAULT_MASTER = "local[*]"

_POM = Path(__file__).with_name("pom.xml")
_LOG4J = Path(__file__).with_name("log4j.properties")
_GROUP_PATH = Path("com", "4paradigm", "openmldb")
_NATIVE_LIBRARY = "libsql_jsdk.so"
# Spark 3.2 reaches into these JDK internals; Java 17 refuses unless they are opened.
_ADD_OPENS = ("java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net",
              "java.nio", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
              "sun.nio.ch", "sun.nio.cs", "sun.security.action", "sun.util.calendar")
_INSTALL_HINT = f"install it with: pip install 'fraudflow[spark]' (pyspark=={PYSPARK_VERSION})"


def cache_dir() -> Path:
    """``$FRAUDFLOW_SPARK_CACHE`` if set, else ``~/.cache/fraudflow/openmldb-spark``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else maven.cache_root() / "openmldb-spark"


@dataclass(frozen=True)
class Runtime:
    """The fetched engine: jars for the classpath and the directory of its native library."""

    jars: tuple[Path, ...]
    native_dir: Path


def ensure_runtime(cache: Path | None = None) -> Runtime:
    """Fetch the OpenMLDB jars (~560 MB) and unpack the native library (~700 MB) unless the
    cache already holds them; return where they are."""
    cache = Path(cache) if cache is not None else cache_dir()
    repo = cache / "m2"
    runtime = _runtime_in(cache)

    def unpack() -> None:
        native = runtime.native_dir
        native.mkdir(parents=True, exist_ok=True)
        jar = repo / _artifact("openmldb-native")
        part = native / f".{_NATIVE_LIBRARY}.part"
        try:
            with zipfile.ZipFile(jar) as archive, archive.open(_NATIVE_LIBRARY) as source, \
                    part.open("wb") as sink:
                while chunk := source.read(1 << 22):
                    sink.write(chunk)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            part.unlink(missing_ok=True)
            raise SparkError(f"cannot unpack {_NATIVE_LIBRARY} from {jar}: {exc}") from None
        os.replace(part, native / _NATIVE_LIBRARY)

    maven.fetch_once(_POM, cache, ["dependency:resolve", f"-Dmaven.repo.local={repo}"],
                     f"OpenMLDB {OPENMLDB_VERSION}'s batch engine", SparkError, after=unpack,
                     clean=False)
    missing = [p for p in (*runtime.jars, runtime.native_dir / _NATIVE_LIBRARY) if not p.exists()]
    if missing:
        raise SparkError(f"the Spark runtime cache {cache} lacks {missing[0]}; delete "
                         f"{cache / maven.STAMP} to fetch it again")
    return runtime


def _runtime_in(cache: Path) -> Runtime:
    repo = cache / "m2"
    return Runtime(jars=(repo / _artifact("openmldb-batch"), repo / _artifact("openmldb-common")),
                   native_dir=cache / "native" / OPENMLDB_VERSION)


def _artifact(name: str) -> Path:
    return _GROUP_PATH / name / OPENMLDB_VERSION / f"{name}-{OPENMLDB_VERSION}.jar"


def pyspark_module() -> Any:
    """pyspark, checked to be the version OpenMLDB's engine is built for."""
    try:
        pyspark = importlib.import_module("pyspark")
    except ImportError:
        raise SparkError(f"OpenMLDB's batch engine needs pyspark, which is not installed; "
                         f"{_INSTALL_HINT}") from None
    if pyspark.__version__ != PYSPARK_VERSION:
        raise SparkError(f"OpenMLDB {OPENMLDB_VERSION}'s batch engine needs pyspark "
                         f"{PYSPARK_VERSION}, found {pyspark.__version__}; {_INSTALL_HINT}")
    return pyspark


def check_master(master: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when a standalone master cannot be reached (Spark itself would
    retry for a minute). `local[...]` needs nothing; YARN and Kubernetes are Spark's to reach."""
    if master == "local" or master.startswith("local["):
        return
    if master.startswith("spark://"):
        for address in master.removeprefix("spark://").split(","):
            parsed = urlparse(f"spark://{address}")
            host, port = parsed.hostname, parsed.port or 7077
            try:
                socket.create_connection((host, port), timeout=timeout).close()
            except OSError as exc:
                raise SparkError(f"the Spark master {master} is unreachable ({host}:{port}: "
                                 f"{exc.strerror or exc})") from None
        return
    if master != "yarn" and not master.startswith(("k8s://", "mesos://")):
        raise SparkError(f"unknown Spark master {master!r}: use local[*], spark://host:port, "
                         "yarn or k8s://…")


class BatchEngine:
    """A Spark session with OpenMLDB's batch engine on it."""

    def __init__(self, spark: Any, openmldb: Any, master: str, startup_seconds: float) -> None:
        self.spark = spark
        self.openmldb = openmldb
        self.master = master
        self.startup_seconds = startup_seconds

    @property
    def versions(self) -> str:
        """As the engine reports them, e.g. ``Spark: 3.2.1, OpenMLDB: 0.9.0-0c10b16``."""
        return str(self.openmldb.version()).strip()

    def register(self, name: str, frame: Any, db: str | None = None) -> None:
        """Make a pyspark DataFrame a table of the engine's SQL (in database `db` too, for
        queries that name it)."""
        self.openmldb.registerTable(name, frame._jdf)
        if db is not None:
            self.openmldb.registerTable(db, name, frame._jdf)

    def sql(self, text: str) -> Any:
        """Run OpenMLDB SQL on the registered tables; a pyspark DataFrame (lazy, as Spark's)."""
        from pyspark.sql import DataFrame

        try:
            jdf = self.openmldb.openmldbSql(text).getSparkDf()
        except Exception as exc:  # py4j's Py4JJavaError carries the JVM's exception
            raise SparkError(f"OpenMLDB's batch engine rejected the query: "
                             f"{java_message(exc)}") from None
        return DataFrame(jdf, self.spark._wrapped)

    def health(self) -> str:
        """Run a one-row query through the whole engine; its versions when it answers."""
        frame = self.spark.range(1).selectExpr("CAST(id AS INT) AS k",
                                               "timestamp_millis(id) AS ts")
        self.register("_health", frame)
        rows = self.sql("SELECT k, count(k) OVER w AS n FROM _health WINDOW w AS "
                        "(PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND "
                        "CURRENT ROW)").collect()
        if [tuple(r) for r in rows] != [(0, 1)]:
            raise SparkError(f"OpenMLDB's batch engine answered a health query with {rows}")
        return self.versions

    def stop(self) -> None:
        self.spark.stop()


def java_message(exc: BaseException) -> str:
    """The first line of a JVM exception raised through py4j (or of any exception)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def start(master: str = DEFAULT_MASTER, *, driver_memory: str = "1g",
          shuffle_partitions: int | None = None, runtime: Runtime | None = None) -> BatchEngine:
    """A new Spark session (JVM launched by pyspark) with OpenMLDB's engine on it.

    `shuffle_partitions` defaults to 2 per local core in local mode (Spark's 200 cost seconds
    of task scheduling on small tables) and to Spark's own default on a cluster.
    """
    pyspark_module()
    check_master(master)
    runtime = runtime or ensure_runtime()
    process.java("Spark", SparkError)
    from pyspark.sql import SparkSession

    classpath = ":".join(str(j) for j in runtime.jars)
    java_options = " ".join([*(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in _ADD_OPENS),
                             f"-Djava.library.path={runtime.native_dir}",
                             f"-Dlog4j.configuration=file:{_LOG4J}"])
    builder = (SparkSession.builder.master(master).appName("fraudflow-openmldb-batch")
               .config("spark.jars", ",".join(str(j) for j in runtime.jars))
               .config("spark.driver.extraClassPath", classpath)
               .config("spark.driver.extraJavaOptions", java_options)
               .config("spark.executor.extraJavaOptions", java_options)
               .config("spark.driver.memory", driver_memory)
               # OpenMLDB reads and prints timestamps in UTC+8; hour()/day() follow it.
               .config("spark.sql.session.timeZone", "Asia/Shanghai")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    if master.startswith("local"):
        cores = len(os.sched_getaffinity(0))
        builder = (builder.config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.sql.shuffle.partitions",
                           str(shuffle_partitions or 2 * cores)))
    elif shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    # The JVM inherits this environment: the native engine's glog then keeps its INFO lines.
    os.environ.setdefault("GLOG_minloglevel", "2")
    began = time.monotonic()
    try:
        spark: Any = builder.getOrCreate()
        jvm = spark._jvm
        openmldb = jvm.com._4paradigm.openmldb.batch.api.OpenmldbSession(spark._jsparkSession)
    except Exception as exc:
        raise SparkError(f"cannot start OpenMLDB's batch engine on {master}: "
                         f"{java_message(exc)}") from None
    engine = BatchEngine(spark, openmldb, master, time.monotonic() - began)
    log.info("OpenMLDB batch engine on %s up in %.1fs (%s)", master, engine.startup_seconds,
             engine.versions)
    return engine


_engine: BatchEngine | None = None
_engine_lock = threading.Lock()


def shared_engine(master: str = DEFAULT_MASTER, driver_memory: str = "1g") -> BatchEngine:
    """The process's engine, started on first use (a session costs seconds; Spark allows one
    per process). Asking for another master than the running one is an error."""
    global _engine
    with _engine_lock:
        if _engine is None or _engine.spark.sparkContext._jsc is None:
            _engine = start(master, driver_memory=driver_memory)
        elif _engine.master != master:
            raise SparkError(f"this process already runs OpenMLDB's batch engine on "
                             f"{_engine.master}; cannot also use {master}")
        return _engine


def stop_shared_engine() -> None:
    global _engine
    with _engine_lock:
        if _engine is not None:
            with contextlib.suppress(Exception):
                _engine.stop()
            _engine = None
