"""moto's backends made atomic per request, as the services they stand in for are.

moto evaluates a DynamoDB condition and then writes, in two steps and with no lock, so
two threads can both pass `version = :v` and both write; real DynamoDB applies each
conditional write atomically. The same holds for an ECR tag move and for SQS's receive
(moto can hand one message to two pollers). Tests that race threads against moto wrap
it in `atomic_backends()`, so what they exercise is our code's concurrency, not moto's.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.ecr.models import ECRBackend
from moto.sqs.models import SQSBackend

ATOMIC_CALLS: tuple[tuple[type, str], ...] = (
    (DynamoDBBackend, "put_item"),
    (DynamoDBBackend, "get_item"),
    (DynamoDBBackend, "update_item"),
    # Its response deep-copies the item it updates before calling the backend: that copy
    # must not run while another request changes the item ("dictionary changed size").
    (DynamoHandler, "update_item"),
    (DynamoDBBackend, "delete_item"),
    (DynamoDBBackend, "query"),
    (ECRBackend, "put_image"),
    (ECRBackend, "batch_get_image"),
    (SQSBackend, "send_message"),
    (SQSBackend, "receive_message"),
    (SQSBackend, "delete_message"),
    (SQSBackend, "change_message_visibility"),
)


@contextmanager
def atomic_backends() -> Iterator[None]:
    lock = threading.RLock()
    originals: list[tuple[type, str, Callable[..., Any]]] = []

    def serialized(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call

    for owner, name in ATOMIC_CALLS:
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, serialized(original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
