"""The image repositories a Bake file's builds publish to, as the builds table remembers them.

With a Bake file, each target is pushed into `<ImageRepositoryName>/<target>`, a
repository ECR creates on its first push, so the stack cannot list them when it is
deployed. The build recorder remembers each one in the builds table (`REPOSITORIES#<image>`,
`BuildsTable.add_image_repositories`); the pruner reads that one item and nothing else
of the table: what to keep is still decided from ECR alone.

The table is writable by other functions, so a name is taken only when it lies under the
stack's own prefix `<ImageRepositoryName>/` and is a valid ECR repository name; any other
is logged and left alone, whatever the item says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from layercache.build_records import BuildsTable, is_image_repository

logger = Logger(child=True)


@dataclass(frozen=True)
class Selection:
    """The names under the stack's prefix (sorted, once each), and those refused."""

    accepted: tuple[str, ...]
    refused: tuple[str, ...]


def within_prefix(image: str, names: Iterable[str]) -> Selection:
    """Split `names` into the repositories under `<image>/` and the rest.

    Only valid ECR repository names strictly below the prefix are accepted: `image`
    itself, `<image>-other/x`, `other/<image>/x` and `<image>/../x` are refused.
    """
    accepted: set[str] = set()
    refused: set[str] = set()
    for name in names:
        (accepted if is_image_repository(image, name) else refused).add(name)
    return Selection(tuple(sorted(accepted)), tuple(sorted(refused)))


class ImageRepositories:
    """The repositories of `image`'s Bake targets: one GetItem on the builds table.

    A failed read (throttling that outlasts the client's retries, access denied) raises.
    """

    def __init__(self, table: BuildsTable, image: str) -> None:
        self._table = table
        self.image = image

    @property
    def pattern(self) -> str:
        """What these repositories are called, for reports: `<image>/*`."""
        return f"{self.image}/*"

    def cache_of(self, name: str, cache_repository: str) -> str:
        """The cache repository of an image repository: `<image>/<t>` -> `<cache>/<t>`."""
        return f"{cache_repository}/{name.removeprefix(self.image + '/')}"

    def names(self) -> tuple[str, ...]:
        selection = within_prefix(self.image, self._table.image_repositories(self.image))
        for name in selection.refused:
            logger.warning(
                "Not pruning a repository outside the stack's prefix",
                extra={"repository": name, "prefix": f"{self.image}/"},
            )
        return selection.accepted
