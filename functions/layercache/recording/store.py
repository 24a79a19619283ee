"""The recorder's writes to BuildsTable: one conditional UpdateItem per event, and the
claim on a final status's report (see items.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from layercache.build_records import BuildsTable, BuildStatus, WriteResult, build_pk, timestamp
from layercache.recording.items import (
    RECORDED_STATUS,
    REPORT_LEASE_UNTIL,
    REPORT_TOKEN,
    REPORTED_AT,
    ItemUpdate,
)

__all__ = ["BuildRecordStore", "WriteResult"]

_NAMES = {
    "#recorded": RECORDED_STATUS,
    "#reported": REPORTED_AT,
    "#token": REPORT_TOKEN,
    "#lease": REPORT_LEASE_UNTIL,
}


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

    def read(self, build_id: str) -> dict[str, Any] | None:
        """The build's item as it is now (a consistent read)."""
        return self.table.get(build_pk(build_id))

    def claim_report(
        self,
        build_id: str,
        status: BuildStatus,
        token: str,
        now: datetime,
        lease_until: datetime,
    ) -> WriteResult:
        """Claim the report of `status` for `token` until `lease_until`.

        Applies only while `status` is the recorded one, nothing was reported yet and no
        other claim is live; when refused, the item as it is (`reported_at` set, or the
        live claim's token and lease) comes back.
        """
        return self.table.update(
            build_pk(build_id),
            "SET #token = :token, #lease = :lease",
            names=_NAMES,
            values={
                ":token": token,
                ":lease": timestamp(lease_until),
                ":now": timestamp(now),
                ":status": status.value,
            },
            condition=(
                "#recorded = :status AND attribute_not_exists(#reported)"
                " AND (attribute_not_exists(#lease) OR #lease < :now)"
            ),
        )

    def mark_reported(self, build_id: str, token: str, now: datetime) -> bool:
        """Note that the claimed report went out; False if `token` no longer held it."""
        return self.table.update(
            build_pk(build_id),
            "SET #reported = :now REMOVE #lease",
            names={name: _NAMES[name] for name in ("#reported", "#token", "#lease")},
            values={":now": timestamp(now), ":token": token},
            condition="#token = :token AND attribute_not_exists(#reported)",
        ).applied

    def release_report(self, build_id: str, token: str) -> bool:
        """Give up an unfinished claim, so the next invocation may claim at once."""
        return self.table.update(
            build_pk(build_id),
            "REMOVE #token, #lease",
            names={name: _NAMES[name] for name in ("#reported", "#token", "#lease")},
            values={":token": token},
            condition="#token = :token AND attribute_not_exists(#reported)",
        ).applied
