"""CodeCommit's commit reads, which moto 5 lacks, for the embedded AWS and the tests.

moto's CodeCommit knows repositories only: GetCommit and GetDifferences (what the
CodeCommit trigger reads: the pushed commit's message, and the paths a push changed for
path filters) answer 500 there. `install()` adds both to moto's CodeCommit, answering from
commits seeded with `put_commits` (id, parents, message, committer date, the paths it
added, modified or deleted), as the CodeCommit API reference describes them:

- GetCommit: `{"commit": {commitId, treeId, parents, message, author, committer,
  additionalData}}`, dates as Git writes them ("<epoch seconds> +0000");
  RepositoryDoesNotExistException, CommitIdRequiredException, InvalidCommitIdException
  (not a 40-digit SHA) and CommitIdDoesNotExistException;
- GetDifferences: the net change of each path between two commits (A, M or D with the
  before and after blobs), or of all history up to `afterCommitSpecifier` without a
  before; commit ids or branch names as specifiers; `beforePath`/`afterPath` limit it to a
  file or folder (PathDoesNotExistException when neither side has it); pages of
  `MaxResults` (default 100: the reference names none) with an opaque `NextToken`;
  CommitDoesNotExistException, InvalidMaxResultsException,
  InvalidContinuationTokenException.

The seeded commits live on moto's repository object, so moto's reset and DeleteRepository
drop them. Seeding writes to this process's moto backends: moto's in-process mock and the
embedded server (`embedded_aws`) alike. The calls added only answer what moto lacks, so
`install()` is idempotent and may stay installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from moto.codecommit.exceptions import RepositoryDoesNotExistException
from moto.codecommit.models import CodeCommit, codecommit_backends
from moto.codecommit.responses import CodeCommitResponse
from moto.core.exceptions import JsonRESTError

ChangeType = Literal["A", "M", "D"]
# The reference gives no default page size for GetDifferences.
DEFAULT_MAX_RESULTS = 100
FILE_MODE = "100644"
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
ACTIONS = ("get_commit", "get_differences")
_STORE = "_layercache_history"
SAMPLE_BASE_COMMIT = hashlib.sha1(b"layercache sample base").hexdigest()  # noqa: S324 - an id


@dataclass(frozen=True)
class Commit:
    """One commit as the model keeps it: `changes` maps each path it touched to A/M/D."""

    commit_id: str
    changes: Mapping[str, ChangeType] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    message: str = ""
    committed_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    committer: str = "Ada Lovelace"
    email: str = "ada@example.com"

    def __post_init__(self) -> None:
        if not COMMIT_ID.match(self.commit_id):
            raise ValueError(f"not a full commit SHA: {self.commit_id!r}")

    def answer(self) -> dict[str, Any]:
        """The commit as GetCommit returns it."""
        user = {
            "name": self.committer,
            "email": self.email,
            "date": f"{int(self.committed_at.timestamp())} +0000",
        }
        return {
            "commitId": self.commit_id,
            "treeId": _blob_id("tree", self.commit_id),
            "parents": list(self.parents),
            "message": self.message,
            "author": user,
            "committer": user,
            "additionalData": "",
        }


@dataclass
class History:
    """A repository's seeded commits and branch tips."""

    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, specifier: str) -> Commit:
        commit_id = self.branches.get(specifier.removeprefix("refs/heads/"), specifier)
        if commit_id not in self.commits:
            raise _error("CommitDoesNotExistException", f"{specifier} does not exist")
        return self.commits[commit_id]

    def ancestry(self, commit: Commit) -> list[Commit]:
        """`commit` and every ancestor, parents before children."""
        ordered: list[Commit] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(commit.commit_id, False)]
        while stack:
            commit_id, expanded = stack.pop()
            if expanded:
                ordered.append(self.commits[commit_id])
            elif commit_id not in seen and commit_id in self.commits:
                seen.add(commit_id)
                stack.append((commit_id, True))
                stack.extend((p, False) for p in reversed(self.commits[commit_id].parents))
        return ordered

    def tree(self, commit: Commit) -> set[str]:
        """The paths that exist at `commit`."""
        paths: set[str] = set()
        for ancestor in self.ancestry(commit):
            for path, change in ancestor.changes.items():
                (paths.discard if change == "D" else paths.add)(path)
        return paths

    def differences(self, before: Commit | None, after: Commit) -> list[dict[str, Any]]:
        """Each path's net change from `before` (or nothing) to `after`, by path."""
        excluded = {c.commit_id for c in self.ancestry(before)} if before else set()
        first: dict[str, ChangeType] = {}
        last: dict[str, ChangeType] = {}
        for commit in self.ancestry(after):
            if commit.commit_id in excluded:
                continue
            for path, change in commit.changes.items():
                first.setdefault(path, change)
                last[path] = change
        differences = []
        for path in sorted(first):
            existed, exists = first[path] != "A", last[path] != "D"
            if not existed and not exists:
                continue  # added and deleted again within the range: no difference
            difference: dict[str, Any] = {
                "changeType": "M" if existed and exists else "A" if exists else "D"
            }
            if existed:
                source = before.commit_id if before else "nothing"
                difference["beforeBlob"] = _blob(path, source)
            if exists:
                difference["afterBlob"] = _blob(path, after.commit_id)
            differences.append(difference)
        return differences


def put_commits(
    repository: str,
    commits: Iterable[Commit],
    *,
    account: str,
    region: str,
    branch: str | None = None,
) -> None:
    """Seed `commits` (parents first) into moto's `repository`; `branch`, when given, then
    points at the last of them."""
    history = _history(_repository_of(codecommit_backends[account][region], repository))
    last = None
    for commit in commits:
        history.commits[commit.commit_id] = commit
        last = commit.commit_id
    if branch and last:
        history.branches[branch] = last


def sample_commits(events: Path) -> list[Commit]:
    """A history in which every commit the CodeCommit samples name exists, each changing
    the Dockerfile: a base commit, each `oldCommitId` on it, each `commitId` on its
    `oldCommitId` (on the base for a new branch), dated as its event."""
    base = Commit(
        SAMPLE_BASE_COMMIT,
        {"Dockerfile": "A", "app/main.py": "A"},
        message="Start the service",
    )
    commits: dict[str, Commit] = {base.commit_id: base}
    for sample in sorted(events.glob("codecommit-trigger/*.json")):
        event = json.loads(sample.read_text())
        detail, at = event["detail"], datetime.fromisoformat(event["time"])
        old = detail.get("oldCommitId")
        if old and old not in commits:
            commits[old] = Commit(
                old, {"app/main.py": "M"}, (base.commit_id,), "Serve /health", committed_at=at
            )
        new = detail.get("commitId")
        if new and new not in commits:
            commits[new] = Commit(
                new,
                {"Dockerfile": "M"},
                (old or base.commit_id,),
                f"Update the Dockerfile ({detail['referenceName']})",
                committed_at=at,
            )
    return list(commits.values())


def install() -> None:
    """Add GetCommit and GetDifferences to moto's CodeCommit (idempotent)."""
    CodeCommitResponse.get_commit = _get_commit  # type: ignore[attr-defined]
    CodeCommitResponse.get_differences = _get_differences  # type: ignore[attr-defined]


def uninstall() -> None:
    for name in ACTIONS:
        if name in CodeCommitResponse.__dict__:
            delattr(CodeCommitResponse, name)


# ---------------------------------------------------------------- the calls


def _get_commit(response: CodeCommitResponse) -> str:
    history = _history(_repository(response))
    commit_id = response._get_param("commitId")
    if not commit_id:
        raise _error("CommitIdRequiredException", "A commit ID is required.")
    if not COMMIT_ID.match(commit_id):
        raise _error("InvalidCommitIdException", f"{commit_id} is not a valid commit ID.")
    if commit_id not in history.commits:
        raise _error("CommitIdDoesNotExistException", f"{commit_id} does not exist.")
    return json.dumps({"commit": history.commits[commit_id].answer()})


def _get_differences(response: CodeCommitResponse) -> str:
    history = _history(_repository(response))
    after_specifier = response._get_param("afterCommitSpecifier")
    if not after_specifier:
        raise _error("CommitRequiredException", "afterCommitSpecifier is required.")
    after = history.resolve(after_specifier)
    before_specifier = response._get_param("beforeCommitSpecifier")
    before = history.resolve(before_specifier) if before_specifier else None
    limit = response._get_param("MaxResults")
    if limit is not None and int(limit) < 1:
        raise _error("InvalidMaxResultsException", f"MaxResults {limit} is not valid.")
    differences = history.differences(before, after)
    for name, at in (("beforePath", before or after), ("afterPath", after)):
        path = (response._get_param(name) or "").strip("/")
        if not path:
            continue
        if not any(_under(candidate, path) for candidate in history.tree(at)):
            raise _error("PathDoesNotExistException", f"{path} does not exist.")
        differences = [d for d in differences if _under(_path_of(d), path)]
    query = json.dumps(
        [
            after.commit_id,
            before.commit_id if before else None,
            response._get_param("beforePath"),
            response._get_param("afterPath"),
        ]
    )
    start = _offset(response._get_param("NextToken"), query)
    end = start + int(limit or DEFAULT_MAX_RESULTS)
    page: dict[str, Any] = {"differences": differences[start:end]}
    if end < len(differences):
        page["NextToken"] = _token(query, end)
    return json.dumps(page)


# ---------------------------------------------------------------- helpers


def _repository(response: CodeCommitResponse) -> CodeCommit:
    name = response._get_param("repositoryName")
    if not name:
        raise _error("RepositoryNameRequiredException", "A repository name is required.")
    return _repository_of(response.codecommit_backend, name)


def _repository_of(backend: Any, name: str) -> CodeCommit:
    repository: CodeCommit | None = backend.repositories.get(name)
    if repository is None:
        raise RepositoryDoesNotExistException(name)
    return repository


def _history(repository: CodeCommit) -> History:
    history: History = repository.__dict__.setdefault(_STORE, History())
    return history


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def _blob_id(*parts: str) -> str:
    return hashlib.sha1(":".join(parts).encode()).hexdigest()  # noqa: S324 - an id


def _blob(path: str, commit_id: str) -> dict[str, str]:
    return {"blobId": _blob_id(commit_id, path), "path": path, "mode": FILE_MODE}


def _path_of(difference: Mapping[str, Any]) -> str:
    blob = difference.get("afterBlob") or difference["beforeBlob"]
    return str(blob["path"])


def _under(path: str, folder_or_file: str) -> bool:
    return path == folder_or_file or path.startswith(folder_or_file + "/")


def _token(query: str, offset: int) -> str:
    return f"{_blob_id('token', query)[:16]}.{offset}"


def _offset(token: str | None, query: str) -> int:
    """Where a page starts: 0 without a token; a token of another query is refused."""
    if not token:
        return 0
    fingerprint, _, offset = token.partition(".")
    if fingerprint != _blob_id("token", query)[:16] or not offset.isdigit():
        raise _error("InvalidContinuationTokenException", "The continuation token is not valid.")
    return int(offset)
