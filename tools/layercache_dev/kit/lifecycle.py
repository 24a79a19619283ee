"""A part of the rig (or the benchmark's link) that starts and stops, usable as `with`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """`with part:` starts it and stops it after; a start that fails stops what it started.

    Subclasses implement `start()` and `stop()`; `stop()` must be safe on a part that did
    not (wholly) start.
    """

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
