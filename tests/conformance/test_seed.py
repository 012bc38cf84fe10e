"""The seed deployment on both engines: the real TalkingData samples (batch and request mode)
and a million synthetic clicks (batch)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.clock import epoch_ms_from_wall
from features.datagen import generate_clicks, read_clicks
from features.store import feature_sql
from tests.conformance.referee import Referee
from tests.workflow_helpers import SAMPLES

# The seed table with `rid`, the input row's number, to join the engines' rows on.
SEED_DDL = """CREATE TABLE talkingdata (rid bigint, ip INT NOT NULL, app INT, device INT,
    os INT, channel INT, click_time TIMESTAMP NOT NULL, is_attributed INT,
    INDEX(KEY=ip, TS=click_time, TTL=0m, TTL_TYPE=absolute))"""
SEED_SQL = feature_sql().replace("SELECT", "SELECT rid,", 1)


def _with_row_ids(clicks: pd.DataFrame) -> pd.DataFrame:
    return clicks.assign(click_time=epoch_ms_from_wall(clicks["click_time"]),
                         rid=np.arange(len(clicks), dtype=np.int64))


@pytest.mark.parametrize("sample", ["train_sample.csv", "train_sample_days.csv"])
def test_seed_deployment_on_the_real_samples(referee: Referee, sample: str) -> None:
    clicks = _with_row_ids(read_clicks(SAMPLES / sample))
    dataset = referee.load(sample.removesuffix(".csv"), SEED_DDL, clicks)
    comparison = dataset.compare(SEED_SQL, request_mode=True)
    print(f"{sample}: {comparison.summary()}")
    comparison.assert_conforms()
    assert comparison.rows == 10_000
    assert comparison.request_rows == comparison.rows_without_tie > 5_000


def test_seed_deployment_on_a_million_synthetic_clicks(referee: Referee) -> None:
    clicks = _with_row_ids(generate_clicks(1_000_000, seed=1))
    dataset = referee.load("synthetic-1m", SEED_DDL, clicks)
    comparison = dataset.compare(SEED_SQL)
    print(f"1M synthetic: {comparison.summary()}")
    comparison.assert_conforms()
    assert comparison.rows == 1_000_000
    assert comparison.rows_without_tie > 900_000  # 934,925: the rest share ip and second
