"""Which of the builds table's repository names the pruner takes (only those under the
stack's prefix), and the settings that switch the table read on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from layercache.pruning.repositories import within_prefix
from layercache.pruning.settings import PrunerSettings

IMAGE = "team/service"


@pytest.mark.parametrize(
    "name",
    ["team/service/api", "team/service/worker-2", "team/service/a.b_c", "team/service/x/y"],
)
def test_a_repository_under_the_prefix_is_taken(name: str) -> None:
    assert within_prefix(IMAGE, [name]).accepted == (name,)


@pytest.mark.parametrize(
    "name",
    [
        "team/service",  # the stack's own repository: configured, never taken twice
        "team/service/",
        "team/service-x/api",
        "team/servicex",
        "other/team/service/api",
        "team/other",
        "team/service/../other",
        "team/service//api",
        "team/service/API",
        "team/service/" + "a" * 250,
        "",
    ],
)
def test_anything_else_is_refused(name: str) -> None:
    selection = within_prefix(IMAGE, [name])
    assert selection.accepted == ()
    assert selection.refused == (name,)


def test_the_taken_names_are_sorted_and_once_each() -> None:
    names = ["team/service/worker", "team/other", "team/service/api", "team/service/worker"]
    selection = within_prefix(IMAGE, names)
    assert selection.accepted == ("team/service/api", "team/service/worker")
    assert selection.refused == ("team/other",)


_segment = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?", fullmatch=True)
_names = st.lists(
    st.one_of(
        st.builds(lambda s: f"{IMAGE}/{s}", _segment),
        st.builds(lambda a, b: f"{a}/{b}", _segment, _segment),
        st.text(max_size=30),
    ),
    max_size=8,
)


@given(names=_names)
def test_every_name_is_taken_or_refused_and_nothing_taken_leaves_the_prefix(
    names: list[str],
) -> None:
    selection = within_prefix(IMAGE, names)
    assert set(selection.accepted) | set(selection.refused) == set(names)
    assert not set(selection.accepted) & set(selection.refused)
    assert all(name.startswith(f"{IMAGE}/") for name in selection.accepted)
    assert list(selection.accepted) == sorted(set(selection.accepted))


def test_the_table_is_read_only_with_a_bake_file() -> None:
    base = {"IMAGE_REPOSITORY_NAME": IMAGE, "BUILDS_TABLE_NAME": "layercache-builds"}
    assert not PrunerSettings.from_env(base).reads_image_repositories
    assert not PrunerSettings.from_env({**base, "BAKE_FILE": " "}).reads_image_repositories
    with_bake = PrunerSettings.from_env({**base, "BAKE_FILE": "docker-bake.hcl"})
    assert with_bake.reads_image_repositories
    assert with_bake.builds_table_name == "layercache-builds"
    # The configured repositories are unchanged: the table's come in addition.
    assert with_bake.repositories == (IMAGE,)


def test_a_bake_file_without_the_table_name_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="BUILDS_TABLE_NAME"):
        PrunerSettings.from_env({"IMAGE_REPOSITORY_NAME": IMAGE, "BAKE_FILE": "docker-bake.hcl"})
