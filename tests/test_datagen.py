"""Tests for the synthetic click generator and the Kaggle-format click file I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import SAMPLE_DATA_DIR
from features.datagen import (
    CLICK_COLUMNS,
    DatagenError,
    generate_clicks,
    generate_to_file,
    iter_click_chunks,
    read_clicks,
    write_clicks,
)

REAL_SAMPLE = SAMPLE_DATA_DIR / "train_sample.csv"
EXPECTED_DTYPES = {
    **{c: np.dtype("int32") for c in ("ip", "app", "device", "os", "channel", "is_attributed")},
    "click_time": np.dtype("datetime64[us]"),
    "attributed_time": np.dtype("datetime64[us]"),
}
BURST_MIN_CLICKS_PER_MINUTE = 20


@pytest.fixture(scope="module")
def clicks() -> pd.DataFrame:
    """200k rows: enough for stable rates, generated once (~0.3 s) for the whole module."""
    return generate_clicks(200_000, seed=7)


@pytest.fixture(scope="module")
def in_burst(clicks: pd.DataFrame) -> pd.Series:
    """True for clicks whose ip x app pair has >= 20 clicks in the same calendar minute."""
    minute = clicks["click_time"].dt.floor("min")
    per_minute = clicks.groupby(["ip", "app", minute])["ip"].transform("size")
    return per_minute >= BURST_MIN_CLICKS_PER_MINUTE


def test_same_seed_gives_identical_frame() -> None:
    first = generate_clicks(20_000, seed=3)
    pd.testing.assert_frame_equal(first, generate_clicks(20_000, seed=3))
    assert not first.equals(generate_clicks(20_000, seed=4))


def test_columns_and_dtypes(clicks: pd.DataFrame) -> None:
    assert tuple(clicks.columns) == CLICK_COLUMNS
    assert clicks.dtypes.to_dict() == EXPECTED_DTYPES
    assert len(clicks) == 200_000
    assert clicks["ip"].between(1, 350_000).all()
    assert clicks["is_attributed"].isin([0, 1]).all()


def test_categoricals_are_skewed(clicks: pd.DataFrame) -> None:
    apps = clicks["app"].value_counts(normalize=True)
    assert 300 < len(apps) <= 700
    assert apps.head(30).sum() > 0.85
    devices = clicks["device"].value_counts(normalize=True)
    assert devices.loc[[1, 2]].sum() > 0.95
    assert clicks["channel"].nunique() > 400


def test_attributed_rate_is_kaggle_like(clicks: pd.DataFrame) -> None:
    assert 0.001 <= clicks["is_attributed"].mean() <= 0.005


def test_attributed_time_follows_click_only_when_attributed(clicks: pd.DataFrame) -> None:
    attributed = clicks["is_attributed"] == 1
    assert clicks["attributed_time"].notna().equals(attributed)
    delay = clicks.loc[attributed, "attributed_time"] - clicks.loc[attributed, "click_time"]
    assert (delay >= pd.Timedelta(seconds=1)).all()


def test_a_few_hot_ips_carry_much_traffic(clicks: pd.DataFrame) -> None:
    ip_share = clicks["ip"].value_counts(normalize=True)
    # Uniform over 350k ids would give each ip ~0.0003 %.
    assert ip_share.iloc[0] > 0.005
    assert ip_share.head(10).sum() > 0.03


def test_bursts_exist(in_burst: pd.Series) -> None:
    assert in_burst.sum() >= 10 * BURST_MIN_CLICKS_PER_MINUTE


def test_bursts_convert_less_than_overall(clicks: pd.DataFrame, in_burst: pd.Series) -> None:
    overall = clicks["is_attributed"].mean()
    assert clicks.loc[in_burst, "is_attributed"].mean() < overall / 3


def test_rarely_seen_ips_convert_more(clicks: pd.DataFrame) -> None:
    clicks_per_ip = clicks.groupby("ip")["ip"].transform("size")
    rare = clicks.loc[clicks_per_ip <= 2, "is_attributed"].mean()
    busy = clicks.loc[clicks_per_ip > 50, "is_attributed"].mean()
    assert rare > 2 * busy


def test_click_time_sorted_to_the_second_with_ties(clicks: pd.DataFrame) -> None:
    click_time = clicks["click_time"]
    assert click_time.is_monotonic_increasing
    assert click_time.duplicated().sum() > 1_000
    assert (click_time == click_time.dt.floor("s")).all()
    start = pd.Timestamp("2017-11-06 16:00:00")
    assert click_time.iloc[0] >= start
    assert click_time.iloc[-1] < start + pd.Timedelta(hours=72)


def test_start_and_hours_bound_click_time() -> None:
    frame = generate_clicks(1_000, seed=1, start="2020-01-01 00:00:00", hours=2)
    assert frame["click_time"].min() >= pd.Timestamp("2020-01-01 00:00:00")
    assert frame["click_time"].max() < pd.Timestamp("2020-01-01 02:00:00")


def test_zero_rows_gives_empty_typed_frame() -> None:
    frame = generate_clicks(0)
    assert frame.empty
    assert frame.dtypes.to_dict() == EXPECTED_DTYPES


def test_csv_round_trip_in_kaggle_format(clicks: pd.DataFrame, tmp_path: Path) -> None:
    sample = clicks.iloc[:50_000]
    path = write_clicks(sample, tmp_path / "nested" / "clicks.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CLICK_COLUMNS)
    first = sample.iloc[0]
    assert lines[1].startswith(f"{first.ip},{first.app},{first.device},{first.os},")
    assert f",{first.click_time:%Y-%m-%d %H:%M:%S},," in lines[1]  # empty attributed_time
    assert any(line.endswith(",1") and ",," not in line for line in lines[1:])
    pd.testing.assert_frame_equal(read_clicks(path), sample.reset_index(drop=True))


def test_parquet_round_trip(clicks: pd.DataFrame, tmp_path: Path) -> None:
    path = write_clicks(clicks, tmp_path / "clicks.parquet")
    pd.testing.assert_frame_equal(read_clicks(path), clicks)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generate_to_file_equals_single_call(suffix: str, tmp_path: Path) -> None:
    path = generate_to_file(30_000, tmp_path / f"clicks{suffix}", seed=5, chunk_rows=4_000)
    pd.testing.assert_frame_equal(read_clicks(path), generate_clicks(30_000, seed=5))
    assert [p.name for p in tmp_path.iterdir()] == [f"clicks{suffix}"]  # no leftovers


def test_generate_to_file_with_zero_rows_writes_header_only(tmp_path: Path) -> None:
    path = generate_to_file(0, tmp_path / "empty.csv")
    assert path.read_text() == ",".join(CLICK_COLUMNS) + "\n"
    assert read_clicks(path).empty


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(min_value=0, max_value=3_000),
    seed=st.integers(min_value=0, max_value=2**32),
    chunk_rows=st.integers(min_value=1, max_value=1_000),
)
def test_chunks_concatenate_to_single_call(rows: int, seed: int, chunk_rows: int) -> None:
    chunks = list(iter_click_chunks(rows, seed=seed, hours=6, chunk_rows=chunk_rows))
    single = generate_clicks(rows, seed=seed, hours=6)
    if rows == 0:
        assert chunks == []
        return
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), single)


def test_read_real_kaggle_sample() -> None:
    sample = read_clicks(REAL_SAMPLE)
    assert len(sample) == 10_000
    assert sample["is_attributed"].sum() == 23
    assert sample.dtypes.to_dict() == EXPECTED_DTYPES
    assert sample["attributed_time"].isna().all()  # the sample drops the column
    assert sample["click_time"].iloc[0] == pd.Timestamp("2017-11-06 14:32:21")


def test_read_names_the_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "no_channel.csv"
    path.write_text("ip,app,device,os,click_time,is_attributed\n1,2,1,13,2017-11-06 14:32:21,0\n")
    with pytest.raises(DatagenError, match="channel"):
        read_clicks(path)


def test_read_reports_unparsable_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ip,app,device,os,channel,click_time,is_attributed\nx,2,1,13,9,2017-11-06,0\n")
    with pytest.raises(DatagenError, match=r"bad\.csv"):
        read_clicks(path)


def test_unknown_suffix_is_a_value_error(clicks: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown click file suffix '\.json'"):
        write_clicks(clicks.head(), tmp_path / "clicks.json")
    with pytest.raises(DatagenError, match=r"use \.csv or \.parquet"):
        generate_to_file(10, tmp_path / "out" / "clicks.txt")
    with pytest.raises(DatagenError):
        read_clicks(tmp_path / "clicks.tsv")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the parent dir


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": -1}, "rows must be >= 0"),
        ({"rows": 10, "hours": 0}, "hours"),
        ({"rows": 10, "start": "2017-11-06 16:00:00+08:00"}, "naive"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_clicks(**kwargs)  # type: ignore[arg-type]
