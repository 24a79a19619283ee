"""BuildsTable as the triggers use it: claims for exactly-once, and one item per build."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from layercache import build_records as records

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from layercache.triggers.builds import BuildRequest, StartedBuild

DELIVERY_RETENTION = timedelta(days=7)
CLAIM_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Claim:
    """A claim on one build request. `token` (its time) is the optimistic lock.

    `replaces` names what a taken-over claim replaced (a failed build, a stale claim),
    so each attempt at a request has its own StartBuild idempotency token.
    """

    pk: str
    token: str
    build_id: str | None
    replaces: str = ""


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _epoch(moment: datetime) -> dict[str, str]:
    return {"N": str(int(moment.timestamp()))}


class BuildsStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    # ------------------------------------------------------------ webhook deliveries
    def claim_delivery(self, delivery_id: str, now: datetime) -> bool:
        """Record a delivery; False if it was recorded before (a redelivery)."""
        return self._put_if(
            {
                "pk": {"S": records.delivery_pk(delivery_id)},
                "received_at": {"S": records.timestamp(now)},
                "expires_at": _epoch(now + DELIVERY_RETENTION),
            },
            "attribute_not_exists(pk)",
        )

    def release_delivery(self, delivery_id: str) -> None:
        """Forget a delivery whose handling failed, so GitHub's redelivery is processed."""
        self.client.delete_item(
            TableName=self.table_name, Key={"pk": {"S": records.delivery_pk(delivery_id)}}
        )

    # ------------------------------------------------------------ request claims
    def try_claim(self, pk: str, now: datetime) -> Claim | None:
        """Claim `pk` if nobody holds it; None if a claim already exists."""
        token = records.timestamp(now)
        if not self._put_if(self._claim_item(pk, token, now), "attribute_not_exists(pk)"):
            return None
        return Claim(pk=pk, token=token, build_id=None)

    def get_claim(self, pk: str) -> Claim | None:
        item = self.client.get_item(
            TableName=self.table_name, Key={"pk": {"S": pk}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        build_id = item.get("build_id", {}).get("S")
        return Claim(pk=pk, token=item["requested_at"]["S"], build_id=build_id)

    def take_over_claim(self, previous: Claim, now: datetime) -> Claim | None:
        """Replace a claim whose build failed or never started; None if someone else did."""
        token = records.timestamp(now)
        if not self._put_if(
            self._claim_item(previous.pk, token, now),
            "requested_at = :previous",
            {":previous": {"S": previous.token}},
        ):
            return None
        replaces = previous.build_id or f"stale claim of {previous.token}"
        return Claim(pk=previous.pk, token=token, build_id=None, replaces=replaces)

    def release_claim(self, claim: Claim) -> None:
        """Drop our claim after StartBuild failed, so a retry can claim again."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": claim.pk}},
                ConditionExpression="requested_at = :token",
                ExpressionAttributeValues={":token": {"S": claim.token}},
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def mark_claim_started(self, claim: Claim, build_id: str) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": claim.pk}},
            UpdateExpression="SET build_id = :build_id",
            ConditionExpression="requested_at = :token",
            ExpressionAttributeValues={":build_id": {"S": build_id}, ":token": {"S": claim.token}},
        )

    @staticmethod
    def _claim_item(pk: str, token: str, now: datetime) -> dict[str, Any]:
        return {
            "pk": {"S": pk},
            "requested_at": {"S": token},
            "expires_at": _epoch(now + CLAIM_RETENTION),
        }

    def _put_if(
        self, item: dict[str, Any], condition: str, values: dict[str, Any] | None = None
    ) -> bool:
        """Put `item` if `condition` holds; False (not an error) when it does not."""
        try:
            if values:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            else:
                self.client.put_item(
                    TableName=self.table_name, Item=item, ConditionExpression=condition
                )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    # ------------------------------------------------------------ build items
    def record_build(self, request: BuildRequest, build: StartedBuild, claim: Claim) -> None:
        """Write the build's item. Upsert: the recorder may have written it first."""
        values: dict[str, Any] = {
            ":build_id": {"S": build.build_id},
            ":build_arn": {"S": build.arn},
            ":build_number": {"N": str(build.number)},
            ":image": {"S": request.image},
            ":branch": {"S": request.branch},
            ":branch_key": {"S": records.branch_key(request.image, request.branch)},
            ":trigger": {"S": request.trigger.value},
            ":mode": {"S": request.mode.value},
            ":requested_at": {"S": records.timestamp(request.requested_at)},
            ":day": {"S": records.day_of(request.requested_at)},
            ":source_version": {"S": request.source_version},
            ":claim_pk": {"S": claim.pk},
            ":status": {"S": build.status},
        }
        assignments = [
            "build_id = :build_id",
            "build_arn = :build_arn",
            "build_number = :build_number",
            "image = :image",
            "branch = :branch",
            "branch_key = :branch_key",
            "#trigger = :trigger",
            "#mode = :mode",
            "requested_at = :requested_at",
            "#day = :day",
            # The recorder stores the commit CodeBuild resolved; a branch name must not win.
            "source_version = if_not_exists(source_version, :source_version)",
            "claim_pk = :claim_pk",
            "#status = if_not_exists(#status, :status)",
        ]
        if request.commit:
            values[":commit"] = {"S": request.commit}
            assignments.append("#commit = :commit")
        names = {"#trigger": "trigger", "#mode": "mode", "#day": "day", "#status": "status"}
        if request.commit:
            names["#commit"] = "commit"
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": records.build_pk(build.build_id)}},
            UpdateExpression="SET " + ", ".join(assignments),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def recent_builds_of_branch(self, image: str, branch: str, limit: int) -> list[dict[str, Any]]:
        """The branch's newest build items, newest first (eventually consistent)."""
        response = self.client.query(
            TableName=self.table_name,
            IndexName=records.INDEX_BY_BRANCH,
            KeyConditionExpression="branch_key = :branch_key",
            ExpressionAttributeValues={":branch_key": {"S": records.branch_key(image, branch)}},
            ScanIndexForward=False,
            Limit=limit,
        )
        return list(response.get("Items", []))
