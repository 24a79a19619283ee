"""BuildsTable's `REPOSITORIES#<image>` item on moto (the table as template.yaml declares it):
the build recorder adds the repositories a Bake build published to, the pruner reads them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from layercache.build_records import BuildsTable, repositories_pk

from .conftest import REGION

IMAGE = "team/service"


@pytest.fixture
def table(stack: Any) -> BuildsTable:
    return BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))


def stored(table: BuildsTable, image: str = IMAGE) -> dict[str, Any] | None:
    return table.get(repositories_pk(image))


def test_a_missing_item_reads_as_no_repositories(table: BuildsTable) -> None:
    assert table.image_repositories(IMAGE) == []


def test_adding_is_a_set_union_and_idempotent(table: BuildsTable) -> None:
    table.add_image_repositories(IMAGE, ["team/service/worker", "team/service/api"])
    table.add_image_repositories(IMAGE, ["team/service/api"])  # a retried event
    table.add_image_repositories(IMAGE, ["team/service/base", "team/service/worker"])

    assert table.image_repositories(IMAGE) == [
        "team/service/api",
        "team/service/base",
        "team/service/worker",
    ]
    item = stored(table)
    assert item is not None
    assert item["image"] == IMAGE
    assert item["repositories"] == {
        "team/service/api",
        "team/service/base",
        "team/service/worker",
    }


def test_the_read_is_sorted(table: BuildsTable) -> None:
    names = ["team/service/zeta", "team/service/alpha", "team/service/m-1", "team/service/m"]
    table.add_image_repositories(IMAGE, names)

    assert table.image_repositories(IMAGE) == sorted(names)


def test_adding_nothing_writes_nothing(table: BuildsTable) -> None:
    table.add_image_repositories(IMAGE, [])

    assert stored(table) is None
    assert table.image_repositories(IMAGE) == []


def test_each_image_has_its_own_item(table: BuildsTable) -> None:
    table.add_image_repositories(IMAGE, ["team/service/api"])
    table.add_image_repositories("team/other", ["team/other/api"])

    assert table.image_repositories(IMAGE) == ["team/service/api"]
    assert table.image_repositories("team/other") == ["team/other/api"]
