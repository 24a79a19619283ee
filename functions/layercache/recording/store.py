"""The BuildsTable writer: one conditional UpdateItem per event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from layercache import aws
from layercache.build_records import build_pk, timestamp
from layercache.recording.items import REPORTED_AT, ItemUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class WriteResult:
    """`applied` is False when the condition refused the write (duplicate or late event)."""

    applied: bool
    item: dict[str, Any]


class BuildRecordStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or aws.client("dynamodb")

    def apply(self, update: ItemUpdate) -> WriteResult:
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={name: _serializer.serialize(value) for name, value in update.key.items()},
                UpdateExpression=update.update_expression,
                ConditionExpression=update.condition_expression,
                ExpressionAttributeNames=update.names,
                ExpressionAttributeValues={
                    name: _serializer.serialize(value) for name, value in update.values.items()
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self.client.exceptions.ConditionalCheckFailedException as refused:
            old = refused.response.get("Item", {})
            return WriteResult(applied=False, item=_plain(old))
        return WriteResult(applied=True, item=_plain(response.get("Attributes", {})))

    def mark_reported(self, build_id: str, now: datetime) -> None:
        """Note that the final status's notifications went out (see items.py)."""
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": build_pk(build_id)}},
            UpdateExpression="SET #reported = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#reported": REPORTED_AT},
            ExpressionAttributeValues={":now": {"S": timestamp(now)}},
        )


def _plain(item: Any) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in dict(item).items()}
