"""Table schemas in OpenMLDB's type system, shared by the compiler wrapper and both engines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from features.exceptions import DataError

# OpenMLDB type names (and their aliases) → canonical name.
TYPE_ALIASES: dict[str, str] = {
    "bool": "bool",
    "smallint": "int16", "int16": "int16",
    "int": "int32", "integer": "int32", "int32": "int32",
    "bigint": "int64", "int64": "int64",
    "float": "float",
    "double": "double",
    "string": "string", "varchar": "string",
    "timestamp": "timestamp",
    "date": "date",
}
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "timestamp": (-(2**63), 2**63 - 1),
}


def canonical_type(name: str) -> str:
    try:
        return TYPE_ALIASES[name.lower()]
    except KeyError:
        raise DataError(f"unknown column type {name!r}") from None


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # canonical OpenMLDB type name, see TYPE_ALIASES
    not_null: bool = False


@dataclass(frozen=True)
class Index:
    """An OpenMLDB index: rows keyed by `keys`, ordered by `ts`, kept per TTL."""

    keys: tuple[str, ...]
    ts: str
    ttl_minutes: int = 0  # absolute TTL; 0 = keep forever
    ttl_latest: int = 0  # latest TTL: keep this many newest rows per key; 0 = all
    ttl_type: str = "absolute"  # absolute | latest | absandlat | absorlat

    def covers(self, other: Index) -> bool:
        """True when this index keeps every row `other` would keep (same key and ts)."""
        if set(self.keys) != set(other.keys) or self.ts != other.ts:
            return False
        abs_ok = self.ttl_minutes == 0 or (0 < other.ttl_minutes <= self.ttl_minutes)
        lat_ok = self.ttl_latest == 0 or (0 < other.ttl_latest <= self.ttl_latest)
        return abs_ok and lat_ok


def nesting_order(keys: Sequence[str], key_sets: Sequence[set[str]],
                  leading: Sequence[str]) -> tuple[str, ...]:
    """Keys in the order that lets windows whose keys nest read a prefix: those most of
    `key_sets` share first, then the table's first index keys (`leading`: batches are
    inserted grouped by them, so they touch neighbouring pages), then by name."""
    return tuple(sorted(keys, key=lambda c: (-sum(c in k for k in key_sets), c not in leading,
                                             c)))


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise DataError(f"table {self.name!r} has no column {name!r}")

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "columns": [[c.name, c.type, c.not_null] for c in self.columns],
            "indexes": [
                {"keys": list(i.keys), "ts": i.ts, "ttl_minutes": i.ttl_minutes,
                 "ttl_latest": i.ttl_latest, "ttl_type": i.ttl_type}
                for i in self.indexes
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> TableSchema:
        return cls(
            name=data["name"],
            columns=tuple(Column(n, t, bool(nn)) for n, t, nn in data["columns"]),
            indexes=tuple(
                Index(tuple(i["keys"]), i["ts"], i["ttl_minutes"], i["ttl_latest"], i["ttl_type"])
                for i in data["indexes"]
            ),
        )
