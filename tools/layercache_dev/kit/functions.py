"""The stack's functions called in this process, found as Lambda finds them: by the
`Handler` string template.yaml gives each. The tests, the demo and the benchmark all
call them through here::

    invoke_function("BuildRecorderFunction", event)       # with a FakeLambdaContext
    handler = function_handler_callable("BuildStarterFunction")   # for an event source
    with fresh_service("ImagePrunerFunction"):            # its cached service forgotten
        invoke_function("ImagePrunerFunction", event)     #   before and after

A function's handler module builds its service once (a `functools.cache`d factory that
reads the environment), as a warm Lambda container does; `reset_function_service`
forgets it, so the next call reads the environment again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TextIO

from layercache_dev.kit.lambda_context import FakeLambdaContext
from layercache_dev.kit.template import function_handler

Handler = Callable[[dict[str, Any], Any], Any]


def function_module(logical_id: str) -> ModuleType:
    """The module that holds `logical_id`'s handler (to patch or warm what it holds)."""
    module_name, _, _ = function_handler(logical_id).rpartition(".")
    return importlib.import_module(module_name)


def function_handler_callable(logical_id: str) -> Handler:
    """The callable Lambda runs for `logical_id`: (event, context) -> response."""
    attribute = function_handler(logical_id).rpartition(".")[2]
    handler: Handler = getattr(function_module(logical_id), attribute)
    return handler


def invoke_function(logical_id: str, event: Mapping[str, Any], context: Any = None) -> Any:
    """Call `logical_id`'s handler with `event`, as Lambda does; a FakeLambdaContext
    named after the function unless `context` is given."""
    handler = function_handler_callable(logical_id)
    return handler(dict(event), context or FakeLambdaContext(f"layercache-{logical_id}"))


def reset_function_service(logical_id: str) -> None:
    """Forget a function's cached service (it read its settings from the environment)."""
    if logical_id in (
        "GitHubWebhookFunction",
        "CodeCommitTriggerFunction",
        "NightlyRebuildFunction",
    ):
        from layercache.triggers import wiring

        wiring.reset()
    elif logical_id == "BuildStarterFunction":
        from layercache.starting import wiring as starting

        starting.reset()
    elif logical_id == "BuildRecorderFunction":
        from layercache.handlers import build_recorder

        build_recorder.default_service.cache_clear()
    elif logical_id == "ImagePrunerFunction":
        from layercache.pruning import service

        service.default_service.cache_clear()


@contextmanager
def fresh_service(logical_id: str) -> Iterator[Handler]:
    """`logical_id`'s handler, its cached service forgotten on the way in and out (so a
    test neither inherits another's nor leaves its own behind)."""
    reset_function_service(logical_id)
    try:
        yield function_handler_callable(logical_id)
    finally:
        reset_function_service(logical_id)


@contextmanager
def log_handlers_writing_to(stream: TextIO, prefix: str = "") -> Iterator[None]:
    """Point the loggers' stream handlers at `stream` while inside (only the loggers named
    `prefix` or below it, when given).

    Powertools' loggers write through a `logging.StreamHandler` holding the stream it
    found when the handler module was first imported: the stdout of whoever imported it
    first (an earlier test's captured output, the demo before it redirected its own).
    Subclasses (pytest's capture handlers, file handlers) are left alone.
    """
    loggers = [logging.getLogger()] if not prefix else []
    loggers += [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if not prefix or name == prefix or name.startswith(prefix + ".")
    ]
    handlers = list(
        {
            id(handler): handler
            for logger in loggers
            for handler in logger.handlers
            if type(handler) is logging.StreamHandler
        }.values()
    )
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        yield
    finally:
        for handler, earlier in zip(handlers, previous, strict=True):
            if earlier is not None:
                handler.setStream(earlier)
