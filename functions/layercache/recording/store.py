"""The recorder's writes to BuildsTable: one conditional UpdateItem per event."""

from __future__ import annotations

from datetime import datetime

from layercache.build_records import BuildsTable, WriteResult, build_pk, timestamp
from layercache.recording.items import REPORTED_AT, ItemUpdate

__all__ = ["BuildRecordStore", "WriteResult"]


class BuildRecordStore:
    def __init__(self, table: BuildsTable) -> None:
        self.table = table

    def apply(self, update: ItemUpdate) -> WriteResult:
        return self.table.update(
            update.key["pk"],
            update.update_expression,
            names=update.names,
            values=update.values,
            condition=update.condition_expression,
        )

    def mark_reported(self, build_id: str, now: datetime) -> None:
        """Note that the final status's notifications went out (see items.py)."""
        self.table.update(
            build_pk(build_id),
            "SET #reported = :now",
            names={"#reported": REPORTED_AT},
            values={":now": timestamp(now)},
            condition="attribute_exists(pk)",
        )
