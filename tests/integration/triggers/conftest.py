"""Fixtures for driving the trigger functions exactly as template.yaml wires them."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from layercache.triggers import wiring
from layercache_dev.template import function_handler

EVENTS = Path(__file__).resolve().parents[3] / "events"
Handler = Callable[[dict[str, Any], Any], Any]


def sample(*parts: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENTS.joinpath(*parts).read_text())
    return event


def template_handler(logical_id: str) -> Handler:
    """The callable Lambda would run for `logical_id`, found by the template's Handler."""
    module_name, _, attribute = function_handler(logical_id).rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), attribute)
    return handler


@pytest.fixture(autouse=True)
def _fresh_services() -> Iterator[None]:
    wiring.reset()
    yield
    wiring.reset()


def builds_started(project_name: str) -> list[str]:
    client = boto3.client("codebuild", region_name="us-east-1")
    return list(client.list_builds_for_project(projectName=project_name)["ids"])


def table_items(table_name: str, prefix: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    items = client.scan(TableName=table_name)["Items"]
    return [item for item in items if item["pk"]["S"].startswith(prefix)]
