from __future__ import annotations

from layercache_cli.history import row_from_item

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def test_a_push_build_shows_its_commit() -> None:
    row = row_from_item({"pk": "BUILD#p:1", "commit": SHA, "source_version": SHA})
    assert row.commit == SHA


def test_a_nightly_build_shows_the_commit_codebuild_resolved() -> None:
    row = row_from_item({"pk": "BUILD#p:2", "source_version": SHA, "trigger": "nightly"})
    assert row.commit == SHA


def test_a_branch_name_is_not_shown_as_a_commit() -> None:
    row = row_from_item({"pk": "BUILD#p:3", "source_version": "main", "trigger": "nightly"})
    assert row.commit == ""
