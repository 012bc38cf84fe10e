"""Event decoding and the packed batches handed to the writer process (no broker needed)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from core import events
from ingest.kafka_io import PackedRecords

_GOOD = (114904, 11, 1, 15, 319, 1_509_960_088_000, 0)
# one of each way an event can be wrong, plus valid events the fast path leaves to decode()
_VALUES = [
    events.encode(_GOOD, "e1"),
    orjson.dumps(dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True))),  # foreign producer
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)),
                  "click_time": "2017-11-06 17:21:28"}),  # string time: valid, slow path
    None, b"", b"not json", b"[1, 2]", b"1,2",
    orjson.dumps({"schema_version": 2, "ip": 1}),
    orjson.dumps({"ip": 1}),
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)), "app": True}),
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)), "os": 1.0}),
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)), "ip": -1}),
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)), "ip": 2**31}),
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)),
                  "click_time": 1_509_960_088}),  # seconds, not ms
    orjson.dumps({**dict(zip(events.TABLE_COLUMNS, _GOOD, strict=True)), "is_attributed": 2}),
    b'{"ip": 1, "pad": "' + b"x" * events.MAX_EVENT_BYTES + b'"}',
]


@settings(max_examples=200)
@given(picks=st.lists(st.sampled_from(range(len(_VALUES))), max_size=30),
       valid_rows=st.lists(st.tuples(*[st.integers(0, 2**31 - 1)] * 5,
                                     st.integers(events.MIN_CLICK_MS, events.MAX_CLICK_MS),
                                     st.integers(0, 1)), max_size=30))
def test_decode_batch_equals_decoding_each_event(picks: list[int],
                                                 valid_rows: list[tuple[int, ...]]) -> None:
    values: list[bytes | None] = [events.encode(row, f"v{i}") for i, row in enumerate(valid_rows)]
    values += [_VALUES[i] for i in picks]
    assert events.decode_batch(values) == [events.decode(v) for v in values]
    clean = values[:len(valid_rows)]
    assert events.decode_batch(clean) == valid_rows  # the fast path, exactly


def test_packed_records_keep_what_the_sinks_read() -> None:
    records = [ConsumerRecord("clicks", offset % 3, -1, offset, 1_700_000_000_000 + offset, 0,
                              None if offset % 4 == 0 else str(offset).encode(),
                              None if offset % 5 == 0 else b"v" * offset, [], None, 1, 1, 0)
               for offset in range(20)]
    # partition 1 fetched again from offset 4 after a rebalance inside the poll
    records += [r for r in records[4:9] if r.partition == 1]
    packed = PackedRecords.pack(records)
    assert len(packed) == len(records)
    fields = ("topic", "partition", "offset", "timestamp", "key", "value")
    assert [tuple(getattr(packed.record(i), f) for f in fields) for i in range(len(records))] \
        == [tuple(getattr(r, f) for f in fields) for r in records]
    kept, lowest, after = packed.first_reads()
    assert kept == list(range(20))
    assert lowest == {0: 0, 1: 1, 2: 2}
    assert after == {0: 19, 1: 20, 2: 18}
    assert PackedRecords.pack([]).first_reads() == ([], {}, {})
