"""The kit's CodeCommit commit reads (moto_codecommit) through real boto3 clients.

In-process moto for the API's answers and errors, the trigger's own `CodeCommitChanges`
against them, and the embedded server, which is what `sam local invoke` talks to.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from layercache.triggers.codecommit import CodeCommitChanges
from layercache_dev.kit import moto_codecommit
from layercache_dev.kit.embedded_aws import (
    ACCOUNT,
    REGION,
    EmbeddedAws,
    StackNames,
    deploy_stack,
)
from layercache_dev.kit.moto_codecommit import ChangeType, Commit, put_commits
from layercache_dev.kit.paths import EVENTS

REPOSITORY = "service"


def sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()  # noqa: S324 - a commit id


ROOT, SECOND, THIRD = sha("root"), sha("second"), sha("third")
PUSHED_AT = datetime(2026, 11, 28, 8, 14, 3, tzinfo=UTC)


@pytest.fixture
def codecommit() -> Iterator[Any]:
    moto_codecommit.install()
    try:
        with mock_aws():
            client = boto3.client("codecommit", region_name=REGION)
            client.create_repository(repositoryName=REPOSITORY)
            yield client
    finally:
        moto_codecommit.uninstall()


def seed(*commits: Commit, branch: str | None = None) -> None:
    put_commits(REPOSITORY, commits, account=ACCOUNT, region=REGION, branch=branch)


def error_code(call: Any, **arguments: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(**arguments)
    return str(raised.value.response["Error"]["Code"])


def history() -> None:
    """root adds three files; second modifies, deletes and adds; third modifies the
    Dockerfile and deletes what second added."""
    seed(
        Commit(ROOT, {"Dockerfile": "A", "app/main.py": "A", "README.md": "A"}),
        Commit(
            SECOND,
            {"app/main.py": "M", "README.md": "D", "app/tmp.txt": "A", "docs/new.md": "A"},
            (ROOT,),
        ),
        Commit(THIRD, {"Dockerfile": "M", "app/tmp.txt": "D"}, (SECOND,)),
        branch="main",
    )


def changes(differences: list[dict[str, Any]]) -> dict[str, str]:
    return {(d.get("afterBlob") or d["beforeBlob"])["path"]: d["changeType"] for d in differences}


def test_get_commit_answers_a_seeded_commit(codecommit: Any) -> None:
    seed(
        Commit(ROOT, {"Dockerfile": "A"}),
        Commit(SECOND, {"Dockerfile": "M"}, (ROOT,), "Pin the base\n\n[ci skip]", PUSHED_AT),
    )

    commit = codecommit.get_commit(repositoryName=REPOSITORY, commitId=SECOND)["commit"]

    assert commit["commitId"] == SECOND
    assert commit["parents"] == [ROOT]
    assert commit["message"] == "Pin the base\n\n[ci skip]"
    assert commit["committer"]["date"] == f"{int(PUSHED_AT.timestamp())} +0000"
    assert commit["author"] == commit["committer"]
    assert len(commit["treeId"]) == 40


def test_get_commit_errors_as_the_api_reference_names_them(codecommit: Any) -> None:
    seed(Commit(ROOT))
    get = codecommit.get_commit

    assert error_code(get, repositoryName=REPOSITORY, commitId=sha("unknown")) == (
        "CommitIdDoesNotExistException"
    )
    assert error_code(get, repositoryName=REPOSITORY, commitId="main") == (
        "InvalidCommitIdException"
    )
    assert error_code(get, repositoryName="nowhere", commitId=ROOT) == (
        "RepositoryDoesNotExistException"
    )


def test_get_differences_gives_each_paths_net_change_between_two_commits(
    codecommit: Any,
) -> None:
    history()

    between = codecommit.get_differences(
        repositoryName=REPOSITORY, beforeCommitSpecifier=ROOT, afterCommitSpecifier=THIRD
    )["differences"]

    # app/tmp.txt was added and deleted again in the range: no difference.
    assert changes(between) == {
        "Dockerfile": "M",
        "app/main.py": "M",
        "README.md": "D",
        "docs/new.md": "A",
    }
    by_path = {(d.get("afterBlob") or d["beforeBlob"])["path"]: d for d in between}
    assert "afterBlob" not in by_path["README.md"]
    assert "beforeBlob" not in by_path["docs/new.md"]
    assert (
        by_path["Dockerfile"]["beforeBlob"]["blobId"]
        != (by_path["Dockerfile"]["afterBlob"]["blobId"])
    )


def test_get_differences_without_a_before_gives_the_whole_history(codecommit: Any) -> None:
    history()

    everything = codecommit.get_differences(repositoryName=REPOSITORY, afterCommitSpecifier="main")

    assert changes(everything["differences"]) == {
        "Dockerfile": "A",
        "app/main.py": "A",
        "docs/new.md": "A",
    }


def test_get_differences_pages_with_max_results_and_next_token(codecommit: Any) -> None:
    paths = [f"src/{number:02}.py" for number in range(7)]
    seed(Commit(ROOT, {"Dockerfile": "A"}), Commit(SECOND, dict.fromkeys(paths, "A"), (ROOT,)))
    asked = {
        "repositoryName": REPOSITORY,
        "beforeCommitSpecifier": ROOT,
        "afterCommitSpecifier": SECOND,
    }

    pages, token = [], None
    while True:
        page = codecommit.get_differences(
            **asked, MaxResults=3, **({"NextToken": token} if token else {})
        )
        pages.append([d["afterBlob"]["path"] for d in page["differences"]])
        token = page.get("NextToken")
        if not token:
            break

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [path for page in pages for path in page] == paths
    paginated = codecommit.get_paginator("get_differences").paginate(
        **asked, PaginationConfig={"PageSize": 2}
    )
    assert [len(page["differences"]) for page in paginated] == [2, 2, 2, 1]


def test_get_differences_refuses_bad_tokens_limits_and_commits(codecommit: Any) -> None:
    history()
    first = codecommit.get_differences(
        repositoryName=REPOSITORY, afterCommitSpecifier=THIRD, MaxResults=1
    )
    get = codecommit.get_differences

    # A token belongs to its query: another range's token is refused.
    assert error_code(
        get,
        repositoryName=REPOSITORY,
        beforeCommitSpecifier=ROOT,
        afterCommitSpecifier=THIRD,
        NextToken=first["NextToken"],
    ) == ("InvalidContinuationTokenException")
    assert error_code(get, repositoryName=REPOSITORY, afterCommitSpecifier=THIRD, MaxResults=0) == (
        "InvalidMaxResultsException"
    )
    assert error_code(get, repositoryName=REPOSITORY, afterCommitSpecifier=sha("gone")) == (
        "CommitDoesNotExistException"
    )
    assert error_code(
        get,
        repositoryName=REPOSITORY,
        beforeCommitSpecifier=sha("gone"),
        afterCommitSpecifier=THIRD,
    ) == ("CommitDoesNotExistException")
    assert error_code(get, repositoryName="nowhere", afterCommitSpecifier=THIRD) == (
        "RepositoryDoesNotExistException"
    )


def test_get_differences_limits_to_a_path(codecommit: Any) -> None:
    history()
    asked = {
        "repositoryName": REPOSITORY,
        "beforeCommitSpecifier": ROOT,
        "afterCommitSpecifier": THIRD,
    }

    under_app = codecommit.get_differences(**asked, afterPath="app")["differences"]

    assert changes(under_app) == {"app/main.py": "M"}
    assert error_code(codecommit.get_differences, **asked, afterPath="nowhere") == (
        "PathDoesNotExistException"
    )


def test_the_triggers_changes_reader_on_the_model(codecommit: Any) -> None:
    """The CodeCommit trigger's own reader: message, changed paths, and its page cap."""
    many: dict[str, ChangeType] = {f"src/{number:03}.py": "A" for number in range(250)}
    seed(
        Commit(ROOT, {"Dockerfile": "A"}),
        Commit(SECOND, {"Dockerfile": "M"}, (ROOT,), "Bump the base"),
        Commit(THIRD, many, (SECOND,)),
    )

    assert CodeCommitChanges(codecommit, 1).commit_message(REPOSITORY, SECOND) == ("Bump the base")
    reader, capped = CodeCommitChanges(codecommit, 3), CodeCommitChanges(codecommit, 2)
    # The reader lists each blob's path: a modified file's before and after.
    assert set(reader.changed_paths(REPOSITORY, ROOT, SECOND) or []) == {"Dockerfile"}
    # 250 added paths are three pages of 100: three pages read them whole, two can't.
    assert sorted(reader.changed_paths(REPOSITORY, SECOND, THIRD) or []) == sorted(many)
    assert capped.changed_paths(REPOSITORY, SECOND, THIRD) is None


@contextmanager
def _reset_after(aws: EmbeddedAws) -> Iterator[None]:
    """The server's backends are this process's: leave none of the stack to later tests."""
    try:
        yield
    finally:
        reset = urllib.request.Request(f"{aws.endpoint}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(reset).close()  # noqa: S310 - the embedded server


def test_the_stack_repository_holds_the_samples_commits() -> None:
    """deploy_stack with events/env.json's names: each CodeCommit sample's push changes
    the Dockerfile, read over HTTP from the embedded server."""
    with EmbeddedAws() as aws, _reset_after(aws):
        names = StackNames.from_env_json()
        deploy_stack(aws.client, aws.endpoint, {"SourceRepository": "octo-org/service"}, names)
        client = aws.client("codecommit")
        for name in ("reference-updated", "reference-created"):
            detail = json.loads((EVENTS / "codecommit-trigger" / f"{name}.json").read_text())[
                "detail"
            ]
            commit = client.get_commit(
                repositoryName=names.source_repository, commitId=detail["commitId"]
            )["commit"]
            assert "[ci skip]" not in commit["message"]
            before = detail.get("oldCommitId") or commit["parents"][0]
            differences = client.get_differences(
                repositoryName=names.source_repository,
                beforeCommitSpecifier=before,
                afterCommitSpecifier=detail["commitId"],
            )["differences"]
            assert changes(differences) == {"Dockerfile": "M"}
