"""Seeded synthetic TalkingData-like clicks, and Kaggle-format CSV / Parquet click files.

The real Kaggle data is 184M rows and not redistributable, so tests, demos and load runs use
this generator instead. It plants the structure a click-fraud model is expected to find:

* IPs are Zipf-distributed over ~350k ids, so a few hot keys carry a large share of clicks;
* app, device, os and channel are skewed categoricals (most mass on a few dozen values);
* bot bursts: one ip hammering one app/channel (fixed device/os) dozens to hundreds of times
  within seconds or minutes; bursts are almost never attributed;
* attribution (~0.25 %) follows a logistic model: a few apps and channels convert far better,
  and rarely-seen ips convert better than hot ones;
* click_time follows a day/night cycle, is recorded to the second and sorted ascending, so many
  rows share a timestamp, as in Kaggle's train.csv.

Generation runs in time blocks (at most an hour and `MAX_BLOCK_ROWS` rows each) with one random
stream per block, derived from the seed. The block layout depends only on (rows, start, hours),
so `generate_clicks`, `iter_click_chunks` and `generate_to_file` give identical rows for a seed,
whatever the chunk size, and memory stays bounded by one chunk.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.exceptions import FraudFlowError

__all__ = [
    "CLICK_COLUMNS",
    "REQUIRED_COLUMNS",
    "DatagenError",
    "generate_clicks",
    "generate_to_file",
    "iter_click_chunks",
    "read_clicks",
    "write_clicks",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Kaggle's train.csv column order.
CLICK_COLUMNS: Final = (
    "ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed",
)
ID_COLUMNS: Final = ("ip", "app", "device", "os", "channel")
INT_COLUMNS: Final = (*ID_COLUMNS, "is_attributed")
# attributed_time is optional on read: the public samples (and the OpenMLDB demo) drop it.
REQUIRED_COLUMNS: Final = tuple(c for c in CLICK_COLUMNS if c != "attributed_time")

# pandas >= 3 and DuckDB's TIMESTAMP both default to microseconds; clicks are whole seconds.
TIME_UNIT: Final = "us"
_TIME_DTYPE: Final = np.dtype(f"datetime64[{TIME_UNIT}]")
_ARROW_SCHEMA: Final = pa.schema(
    [(c, pa.int32()) for c in ID_COLUMNS]
    + [("click_time", pa.timestamp(TIME_UNIT)), ("attributed_time", pa.timestamp(TIME_UNIT))]
    + [("is_attributed", pa.int32())]
)
# Arrow's CSV writer renders timestamp[s] exactly as Kaggle does: "2017-11-06 16:00:00".
_CSV_SCHEMA: Final = pa.schema(
    [f.with_type(pa.timestamp("s")) if pa.types.is_timestamp(f.type) else f
     for f in _ARROW_SCHEMA]
)

DEFAULT_START: Final = "2017-11-06 16:00:00"  # first hour of Kaggle's train.csv
DEFAULT_HOURS: Final = 72.0

# --- shape of the synthetic traffic -------------------------------------------------------
IP_ID_COUNT: Final = 350_000
IP_ZIPF_EXPONENT: Final = 0.8  # top ip ~1.6 %, top ten ~6 %: hot keys like NAT gateways
APP_COUNT: Final = 700
CHANNEL_COUNT: Final = 500
OS_COUNT: Final = 800
DEVICE_COUNT: Final = 3_400

TARGET_ATTRIBUTED_RATE: Final = 0.0025
BURST_ROW_SHARE: Final = 0.10
BURST_MIN_CLICKS: Final = 20
BURST_MAX_CLICKS: Final = 2_000
BURST_MEDIAN_EXTRA_CLICKS: Final = 40.0  # on top of BURST_MIN_CLICKS
BURST_MEDIAN_CLICKS_PER_SECOND: Final = 1.0
# Log-odds added to a burst click: ~1 % of an organic click's chance of converting.
BURST_LOGODDS: Final = -4.6
# Rank-based ip effect: the rarest ips convert ~e^2.9 = 18x better than the hottest.
IP_RANK_LOGODDS_SLOPE: Final = 0.35
CONVERTING_APPS: Final = 8
CONVERTING_APP_LOGODDS: Final = 3.0
CONVERTING_CHANNELS: Final = 6
CONVERTING_CHANNEL_LOGODDS: Final = 2.5
ATTRIBUTION_MEDIAN_DELAY_SECONDS: Final = 8 * 60.0

MAX_BLOCK_SECONDS: Final = 3_600
MAX_BLOCK_ROWS: Final = 500_000
_CALIBRATION_SAMPLE: Final = 200_000


class DatagenError(FraudFlowError, ValueError):
    """Bad generator arguments or an unreadable click file (a ValueError, so callers may
    catch either)."""


# --- the seeded "world": id tables and conversion effects shared by every block -----------

@dataclass(frozen=True)
class _Categorical:
    """A categorical distribution over popularity ranks; `ids[rank]` is the rank's id."""

    ids: npt.NDArray[np.int32]
    cdf: FloatArray

    @classmethod
    def from_weights(cls, ids: npt.ArrayLike, weights: FloatArray) -> _Categorical:
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]  # exactly 1.0 at the end, so a draw in [0, 1) never falls off the table
        return cls(ids=np.asarray(ids, dtype=np.int32), cdf=cdf)

    def sample_ranks(self, rng: np.random.Generator, size: int) -> IntArray:
        return np.searchsorted(self.cdf, rng.random(size), side="right")


@dataclass(frozen=True)
class _World:
    ip: _Categorical
    app: _Categorical
    device: _Categorical
    os: _Categorical
    channel: _Categorical
    ip_logodds: FloatArray  # by ip rank
    app_logodds: FloatArray  # by app rank
    channel_logodds: FloatArray  # by channel rank
    intercept: float  # calibrated so organic clicks convert at the target rate


def _zipf_mandelbrot(count: int, exponent: float, shift: float = 0.0) -> FloatArray:
    """Weights (rank + 1 + shift) ** -exponent: a shift flattens the head of a Zipf law."""
    ranks = np.arange(1, count + 1, dtype=np.float64)
    return np.power(ranks + shift, -exponent)


def _ids_roughly_by_popularity(rng: np.random.Generator, count: int, jitter: float) -> IntArray:
    """Ids 0..count-1 ordered by popularity rank, shuffled locally: in Kaggle's data popular
    apps and os versions have small ids (3, 12, 15 / 19, 13), but not in strict order."""
    return np.argsort(np.arange(count) + rng.normal(0.0, jitter, count), kind="stable")


def _device_distribution(rng: np.random.Generator) -> _Categorical:
    # Kaggle: device 1 ~94 %, device 2 ~4 %, then 3032 and 0; ~3k devices share the rest.
    head_ids = np.array([1, 2, 3032, 0])
    head_mass = np.array([0.935, 0.045, 0.010, 0.003])
    tail_ids = rng.permutation(np.setdiff1d(np.arange(DEVICE_COUNT + 1), head_ids))
    tail_weights = _zipf_mandelbrot(tail_ids.size, 1.3)
    tail_mass = tail_weights / tail_weights.sum() * (1.0 - head_mass.sum())
    return _Categorical.from_weights(
        np.concatenate([head_ids, tail_ids]), np.concatenate([head_mass, tail_mass])
    )


def _boosted_logodds(
    rng: np.random.Generator, count: int, spread: float, boosted: int, boost: float,
    boost_ranks: tuple[int, int],
) -> FloatArray:
    """Random per-value log-odds, plus a big boost for a few mid-popularity values (the apps
    and channels that really convert are not the ones with the most traffic)."""
    logodds = rng.normal(0.0, spread, count)
    logodds[rng.choice(np.arange(*boost_ranks), size=boosted, replace=False)] += boost
    return logodds


def _calibrate_intercept(rng: np.random.Generator, logodds: FloatArray, target: float) -> float:
    """Solve mean(sigmoid(b + logodds)) = target for b by Newton's method: the logistic model
    has no closed-form mean, so we solve on a sample of the world's organic clicks."""
    intercept = math.log(target / (1.0 - target)) - float(np.median(logodds))
    for _ in range(50):
        probability = 1.0 / (1.0 + np.exp(-(intercept + logodds)))
        error = float(probability.mean()) - target
        slope = float((probability * (1.0 - probability)).mean())
        intercept -= error / slope
        if abs(error) < target * 1e-9:
            break
    return intercept


@functools.lru_cache(maxsize=8)
def _world(seed: int) -> _World:
    """The seed's id tables and conversion effects (cached: every block of a run shares them)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    ip = _Categorical.from_weights(
        rng.permutation(np.arange(1, IP_ID_COUNT + 1)),
        _zipf_mandelbrot(IP_ID_COUNT, IP_ZIPF_EXPONENT),
    )
    app = _Categorical.from_weights(
        _ids_roughly_by_popularity(rng, APP_COUNT, jitter=15.0),
        _zipf_mandelbrot(APP_COUNT, 2.2, shift=3.0),
    )
    os_ = _Categorical.from_weights(
        _ids_roughly_by_popularity(rng, OS_COUNT, jitter=12.0),
        _zipf_mandelbrot(OS_COUNT, 2.0, shift=2.0),
    )
    channel = _Categorical.from_weights(
        rng.permutation(CHANNEL_COUNT), _zipf_mandelbrot(CHANNEL_COUNT, 1.6, shift=8.0)
    )
    device = _device_distribution(rng)

    ip_logodds = IP_RANK_LOGODDS_SLOPE * np.log1p(np.arange(IP_ID_COUNT) / 100.0)
    app_logodds = _boosted_logodds(
        rng, APP_COUNT, 0.8, CONVERTING_APPS, CONVERTING_APP_LOGODDS, boost_ranks=(8, 100)
    )
    channel_logodds = _boosted_logodds(
        rng, CHANNEL_COUNT, 0.7, CONVERTING_CHANNELS, CONVERTING_CHANNEL_LOGODDS,
        boost_ranks=(10, 150),
    )
    organic_logodds = (
        app_logodds[app.sample_ranks(rng, _CALIBRATION_SAMPLE)]
        + channel_logodds[channel.sample_ranks(rng, _CALIBRATION_SAMPLE)]
        + ip_logodds[ip.sample_ranks(rng, _CALIBRATION_SAMPLE)]
    )
    # Bursts convert at ~1 % of the organic rate, so organic clicks carry the whole target.
    organic_target = TARGET_ATTRIBUTED_RATE / (1.0 - BURST_ROW_SHARE)
    world = _World(
        ip=ip, app=app, device=device, os=os_, channel=channel,
        ip_logodds=ip_logodds, app_logodds=app_logodds, channel_logodds=channel_logodds,
        intercept=_calibrate_intercept(rng, organic_logodds, organic_target),
    )
    for categorical in (ip, app, device, os_, channel):
        categorical.ids.flags.writeable = False  # the cached world is shared between calls
        categorical.cdf.flags.writeable = False
    for table in (ip_logodds, app_logodds, channel_logodds):
        table.flags.writeable = False
    return world


# --- time blocks ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Block:
    index: int
    first_second: int  # offset from the start of the run
    seconds: int
    rows: int


def _traffic_intensity(utc_hour: FloatArray) -> FloatArray:
    """Relative click rate by hour of day. Kaggle's times are UTC; the clicks come from China
    (UTC+8), so traffic peaks around 09 UTC (17:00 local) and bottoms out around 21 UTC."""
    return 1.0 + 0.7 * np.cos(2.0 * np.pi * (utc_hour - 9.0) / 24.0)


def _largest_remainder(total: int, weights: FloatArray) -> IntArray:
    """Split `total` into integers proportional to `weights`, summing exactly to `total`."""
    quotas = weights / weights.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    shortfall = total - int(counts.sum())
    counts[np.argsort(-(quotas - counts), kind="stable")[:shortfall]] += 1
    return counts


def _plan_blocks(rows: int, start: pd.Timestamp, total_seconds: int) -> list[_Block]:
    block_count = max(
        math.ceil(total_seconds / MAX_BLOCK_SECONDS), math.ceil(rows / MAX_BLOCK_ROWS), 1
    )
    block_count = min(block_count, total_seconds)  # every block spans at least one second
    edges = np.linspace(0, total_seconds, block_count + 1).round().astype(np.int64)
    lengths = np.diff(edges)
    start_hour = start.hour + start.minute / 60.0 + start.second / 3600.0
    mid_hours = start_hour + (edges[:-1] + lengths / 2.0) / 3600.0
    block_rows = _largest_remainder(rows, lengths * _traffic_intensity(mid_hours))
    return [
        _Block(index=i, first_second=int(edges[i]), seconds=int(lengths[i]),
               rows=int(block_rows[i]))
        for i in range(block_count)
    ]


# --- generating one block --------------------------------------------------------------------

@dataclass(frozen=True)
class _BlockRows:
    """One block's rows, sorted by time, as numpy columns."""

    columns: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return len(self.columns["ip"])


def _burst_sizes(rng: np.random.Generator, burst_rows: int) -> IntArray:
    """Burst lengths summing exactly to `burst_rows` (the last burst is cut short)."""
    if burst_rows == 0:
        return np.zeros(0, dtype=np.int64)
    # Every full burst has >= BURST_MIN_CLICKS clicks, so this many always covers burst_rows.
    candidates = burst_rows // BURST_MIN_CLICKS + 1
    extra = rng.lognormal(math.log(BURST_MEDIAN_EXTRA_CLICKS), 1.0, candidates)
    sizes = np.minimum(BURST_MIN_CLICKS + extra.astype(np.int64), BURST_MAX_CLICKS)
    ends = np.cumsum(sizes)
    last = int(np.searchsorted(ends, burst_rows, side="left"))
    sizes = sizes[: last + 1]
    sizes[-1] -= int(ends[last]) - burst_rows
    return sizes


def _draw_block(world: _World, rng: np.random.Generator, block: _Block) -> dict[str, np.ndarray]:
    """One block's clicks as popularity ranks (not ids yet), sorted by second offset."""
    burst_rows = int(rng.binomial(block.rows, BURST_ROW_SHARE))
    organic_rows = block.rows - burst_rows

    organic = {
        "second": block.first_second + rng.integers(0, block.seconds, organic_rows),
        **{name: getattr(world, name).sample_ranks(rng, organic_rows) for name in ID_COLUMNS},
    }

    # A burst is one ip on one app/channel/device/os, clicking at a steady-ish rate.
    sizes = _burst_sizes(rng, burst_rows)
    burst_count = sizes.size
    clicks_per_second = rng.lognormal(math.log(BURST_MEDIAN_CLICKS_PER_SECOND), 0.8, burst_count)
    durations = np.clip(np.ceil(sizes / clicks_per_second).astype(np.int64), 1, block.seconds)
    # Start early enough that the whole burst fits in the block, keeping blocks time-disjoint.
    first_seconds = block.first_second + (
        rng.random(burst_count) * (block.seconds - durations + 1)
    ).astype(np.int64)
    burst_of_row = np.repeat(np.arange(burst_count), sizes)
    bursts = {
        "second": first_seconds[burst_of_row]
        + (rng.random(burst_rows) * durations[burst_of_row]).astype(np.int64),
        **{
            name: getattr(world, name).sample_ranks(rng, burst_count)[burst_of_row]
            for name in ID_COLUMNS
        },
    }

    is_burst = np.zeros(block.rows, dtype=bool)
    is_burst[organic_rows:] = True
    rows = {name: np.concatenate([organic[name], bursts[name]]) for name in organic}
    rows["is_burst"] = is_burst
    order = np.argsort(rows["second"], kind="stable")
    return {name: values[order] for name, values in rows.items()}


def _attribute(
    world: _World, rng: np.random.Generator, rows: dict[str, np.ndarray]
) -> tuple[npt.NDArray[np.bool_], IntArray]:
    """Draw which clicks convert, and for those, the delay in seconds until they do."""
    logodds = (
        world.intercept
        + world.app_logodds[rows["app"]]
        + world.channel_logodds[rows["channel"]]
        + world.ip_logodds[rows["ip"]]
        + np.where(rows["is_burst"], BURST_LOGODDS, 0.0)
    )
    # u < sigmoid(x)  <=>  u * (1 + e^-x) < 1, without a division per row.
    attributed = rng.random(logodds.size) * (1.0 + np.exp(-logodds)) < 1.0
    delays = rng.lognormal(math.log(ATTRIBUTION_MEDIAN_DELAY_SECONDS), 1.2, int(attributed.sum()))
    return attributed, np.maximum(np.rint(delays).astype(np.int64), 1)


def _block_rows(world: _World, seed: int, start: np.datetime64, block: _Block) -> _BlockRows:
    # One independent stream per block, so any block can be generated without the others.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, block.index)))
    rows = _draw_block(world, rng, block)
    attributed, delays = _attribute(world, rng, rows)

    click_time = start + rows["second"].astype("timedelta64[s]")
    attributed_time = np.full(block.rows, np.datetime64("NaT"), dtype=_TIME_DTYPE)
    attributed_time[attributed] = click_time[attributed] + delays.astype("timedelta64[s]")

    columns: dict[str, np.ndarray] = {
        name: getattr(world, name).ids[rows[name]] for name in ID_COLUMNS
    }
    columns["click_time"] = click_time
    columns["attributed_time"] = attributed_time
    columns["is_attributed"] = attributed.astype(np.int32)
    return _BlockRows(columns)


# --- public generation API -----------------------------------------------------------------

@dataclass(frozen=True)
class _Run:
    seed: int
    start: np.datetime64
    blocks: list[_Block]

    def block_rows(self) -> Iterator[_BlockRows]:
        world = _world(self.seed)
        for block in self.blocks:
            yield _block_rows(world, self.seed, self.start, block)


def _plan_run(rows: int, seed: int, start: datetime | str, hours: float) -> _Run:
    if rows < 0:
        raise DatagenError(f"rows must be >= 0, got {rows}")
    if seed < 0:
        raise DatagenError(f"seed must be >= 0, got {seed}")
    total_seconds = round(hours * 3600)
    if total_seconds < 1:
        raise DatagenError(f"hours must cover at least one second, got {hours}")
    start_ts = pd.Timestamp(start)
    if start_ts.tzinfo is not None:
        raise DatagenError(f"start must be naive wall-clock time (as in Kaggle), got {start_ts}")
    start_ts = start_ts.floor("s")  # clicks are recorded to the second
    return _Run(
        seed=seed,
        start=np.datetime64(start_ts.to_datetime64(), TIME_UNIT),
        blocks=_plan_blocks(rows, start_ts, total_seconds),
    )


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({name: columns[name] for name in CLICK_COLUMNS}, copy=False)


def generate_clicks(
    rows: int,
    seed: int = 0,
    start: datetime | str = DEFAULT_START,
    hours: float = DEFAULT_HOURS,
) -> pd.DataFrame:
    """`rows` synthetic clicks in Kaggle's columns, spread over `hours` from `start`.

    Ids and is_attributed are int32; click_time / attributed_time are naive datetime64[us]
    (attributed_time is NaT unless is_attributed). Rows are sorted by click_time. The same
    (rows, seed, start, hours) always gives the identical frame.
    """
    run = _plan_run(rows, seed, start, hours)
    # Fill preallocated columns block by block, so the peak is the result plus one block.
    columns: dict[str, np.ndarray] = {
        name: np.empty(rows, dtype=_TIME_DTYPE if name.endswith("_time") else np.int32)
        for name in CLICK_COLUMNS
    }
    offset = 0
    for block in run.block_rows():
        for name, values in block.columns.items():
            columns[name][offset : offset + block.size] = values
        offset += block.size
    return _frame(columns)


def iter_click_chunks(
    rows: int,
    seed: int = 0,
    start: datetime | str = DEFAULT_START,
    hours: float = DEFAULT_HOURS,
    chunk_rows: int = 2_000_000,
) -> Iterator[pd.DataFrame]:
    """`generate_clicks(rows, seed, start, hours)` in consecutive chunks of about `chunk_rows`
    (whole time blocks, so a chunk may exceed it by up to `MAX_BLOCK_ROWS`); concatenated they
    equal the single frame. Yields nothing when rows is 0."""
    if chunk_rows < 1:
        raise DatagenError(f"chunk_rows must be >= 1, got {chunk_rows}")
    run = _plan_run(rows, seed, start, hours)
    pending: list[_BlockRows] = []
    pending_rows = 0
    for block in run.block_rows():
        pending.append(block)
        pending_rows += block.size
        if pending_rows >= chunk_rows:
            yield _concat_blocks(pending)
            pending, pending_rows = [], 0
    if pending_rows:
        yield _concat_blocks(pending)


def _concat_blocks(blocks: list[_BlockRows]) -> pd.DataFrame:
    return _frame({
        name: np.concatenate([b.columns[name] for b in blocks]) for name in CLICK_COLUMNS
    })


# --- files ---------------------------------------------------------------------------------

_FileFormat = Literal["csv", "parquet"]


def _file_format(path: Path) -> _FileFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    raise DatagenError(f"unknown click file suffix {path.suffix!r} in {path}: use .csv or .parquet")


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatagenError(f"click frame lacks required column(s): {', '.join(missing)}")
    try:
        arrays = [
            pa.array(df[field.name], type=field.type, from_pandas=True)
            if field.name in df.columns else pa.nulls(len(df), type=field.type)
            for field in _ARROW_SCHEMA
        ]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # e.g. an id beyond int32
        raise DatagenError(f"click frame does not fit the click schema: {error}") from error
    return pa.Table.from_arrays(arrays, schema=_ARROW_SCHEMA)


class _ClickFileWriter:
    """Appends click frames to one CSV or Parquet file. Writes go to a hidden temporary file
    that replaces `path` only on success, so readers never see a half-written file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.format = _file_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._sink: BinaryIO | None = None
        self._csv: pa_csv.CSVWriter | None = None
        self._parquet: pq.ParquetWriter | None = None
        if self.format == "csv":
            self._sink = open(self._partial, "wb")  # noqa: SIM115 - closed in close()
            # Arrow quotes header names; Kaggle's header is bare.
            self._sink.write((",".join(CLICK_COLUMNS) + "\n").encode())
            self._csv = pa_csv.CSVWriter(
                self._sink, _CSV_SCHEMA,
                write_options=pa_csv.WriteOptions(include_header=False, quoting_style="none"),
            )
        else:
            self._parquet = pq.ParquetWriter(self._partial, _ARROW_SCHEMA)

    def write(self, df: pd.DataFrame) -> None:
        table = _to_arrow(df)
        if self._csv is not None:
            # Casting to whole seconds drops sub-second parts, which Kaggle's format lacks.
            self._csv.write_table(table.cast(_CSV_SCHEMA, safe=False))
        elif self._parquet is not None:
            self._parquet.write_table(table)

    def close(self, succeeded: bool) -> None:
        if self._csv is not None:
            self._csv.close()
        if self._sink is not None:
            self._sink.close()
        if self._parquet is not None:
            self._parquet.close()
        if succeeded:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> _ClickFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(succeeded=exc_type is None)


def write_clicks(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write clicks to `path` as Kaggle CSV (bare header, `YYYY-MM-DD HH:MM:SS`, empty
    attributed_time when none) or Parquet, chosen by the .csv / .parquet suffix. Creates parent
    directories; a frame without attributed_time gets an empty one. Returns the path."""
    with _ClickFileWriter(path) as writer:
        writer.write(df)
    return writer.path


def generate_to_file(
    rows: int,
    path: str | os.PathLike[str],
    seed: int = 0,
    chunk_rows: int = 2_000_000,
    start: datetime | str = DEFAULT_START,
    hours: float = DEFAULT_HOURS,
) -> Path:
    """Write `generate_clicks(rows, seed, start, hours)` to `path` chunk by chunk, so memory
    stays around `chunk_rows` rows however large `rows` is. Returns the path."""
    _file_format(Path(path))  # fail on a bad suffix before generating anything
    chunks = iter_click_chunks(rows, seed, start, hours, chunk_rows)
    with _ClickFileWriter(path) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.path


def read_clicks(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Kaggle-format CSV (e.g. train_sample.csv) or a Parquet click file into
    `generate_clicks`' columns and dtypes: int32 ids and is_attributed, datetime64[us] times.
    attributed_time may be absent from the file (it is then all NaT); extra columns are
    dropped. Raises DatagenError naming any missing required column."""
    source = Path(path)
    try:
        if _file_format(source) == "csv":
            table = pa_csv.read_csv(
                source,
                convert_options=pa_csv.ConvertOptions(
                    column_types={f.name: f.type for f in _CSV_SCHEMA}
                ),
            )
        else:
            table = pq.read_table(source)
    except pa.ArrowInvalid as error:  # e.g. "ip: invalid value 'x'" or a non-Parquet file
        raise DatagenError(f"cannot read clicks from {source}: {error}") from error
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DatagenError(f"{source} lacks required column(s): {', '.join(missing)}")
    empty = [c for c in REQUIRED_COLUMNS if table.column(c).null_count]
    if empty:
        raise DatagenError(f"{source} has empty values in column(s): {', '.join(empty)}")
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names
        else pa.nulls(table.num_rows, type=f.type)
        for f in _ARROW_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=_ARROW_SCHEMA).to_pandas()
