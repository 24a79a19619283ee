"""moto's CodeBuild made to answer StartBuild as CodeBuild does, where the starter cares.

moto 5 ignores what makes StartBuild safe to retry: it drops `environmentVariablesOverride`
and `idempotencyToken`, and reports every build SUCCEEDED when asked. `CodeBuildLike`
(installed on the process's moto backend) models, from CodeBuild's API reference:

- the idempotency token: the same token with the same parameters within 5 minutes
  answers the build it already started; with other parameters it is refused
  (`IdempotentParameterMismatchException`); after 5 minutes it starts a new build;
- the overrides, kept in the build's `environment.environmentVariables`;
- builds that stay IN_PROGRESS until a test finishes them (`finish`), StopBuild;
- throttling: `throttle(n)` refuses the next n StartBuild calls (`ThrottlingException`),
  and `lose_response(n)` starts the build but fails the next n answers, as a timeout
  after CodeBuild acted would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.backends import get_backend
from moto.codebuild.responses import CodeBuildResponse
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult

from layercache_dev.kit.embedded_aws import ACCOUNT, REGION

IDEMPOTENCY_WINDOW = timedelta(minutes=5)


@dataclass
class CodeBuildLike:
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    start_calls: int = 0
    _throttles: int = 0
    _lost_responses: int = 0
    _tokens: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    _original: Any = None

    # ------------------------------------------------------------ test controls
    def throttle(self, calls: int) -> None:
        self._throttles = calls

    def lose_response(self, calls: int) -> None:
        self._lost_responses = calls

    def builds(self) -> list[dict[str, Any]]:
        backend = self._backend()
        return [build for history in backend.build_metadata_history.values() for build in history]

    def build(self, build_id: str) -> dict[str, Any]:
        return next(build for build in self.builds() if build["id"] == build_id)

    def finish(self, build_id: str, status: str = "SUCCEEDED") -> None:
        build = self.build(build_id)
        build["buildStatus"] = status
        build["buildComplete"] = True
        build["currentPhase"] = "COMPLETED"

    def environment_of(self, build_id: str) -> dict[str, str]:
        variables = self.build(build_id)["environment"]["environmentVariables"]
        return {v["name"]: v.get("value", "") for v in variables}

    # ------------------------------------------------------------ the model
    def _backend(self) -> Any:
        return get_backend("codebuild")[ACCOUNT][REGION]

    def install(self) -> None:
        self._original = CodeBuildResponse.start_build
        model = self
        backend = self._backend()

        def start_build(response: CodeBuildResponse) -> Any:
            return model._start_build(response)

        def batch_get_builds(ids: list[str]) -> list[dict[str, Any]]:
            by_id = {build["id"]: build for build in model.builds()}
            return [by_id[build_id] for build_id in ids if build_id in by_id]

        def stop_build(build_id: str) -> dict[str, Any]:
            build = model.build(build_id)
            if build["buildStatus"] == "IN_PROGRESS":
                model.finish(build_id, "STOPPED")
            return build

        CodeBuildResponse.start_build = start_build  # type: ignore[method-assign,assignment]
        backend.batch_get_builds = batch_get_builds
        backend.stop_build = stop_build

    def uninstall(self) -> None:
        if self._original is not None:
            CodeBuildResponse.start_build = self._original  # type: ignore[method-assign]
            self._original = None
        backend = self._backend()
        backend.__dict__.pop("batch_get_builds", None)
        backend.__dict__.pop("stop_build", None)

    def _start_build(self, response: CodeBuildResponse) -> Any:
        self.start_calls += 1
        if self._throttles > 0:
            self._throttles -= 1
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        params = {
            "sourceVersion": response._get_param("sourceVersion"),
            "environmentVariablesOverride": response._get_param("environmentVariablesOverride"),
        }
        fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        token = response._get_param("idempotencyToken")
        now = self.clock()
        if token and token in self._tokens:
            seen_fingerprint, build_id, started = self._tokens[token]
            if now - started < IDEMPOTENCY_WINDOW:
                if seen_fingerprint != fingerprint:
                    raise JsonRESTError(
                        "IdempotentParameterMismatchException",
                        "The idempotency token was used with different parameters.",
                    )
                return self._answer(response, self.build(build_id))
        result = self._original(response)
        build = result.result["build"]
        build["buildStatus"] = "IN_PROGRESS"
        build["currentPhase"] = "QUEUED"
        build["environment"]["environmentVariables"] = [
            {"name": o["name"], "value": o.get("value", ""), "type": o.get("type", "PLAINTEXT")}
            for o in params["environmentVariablesOverride"] or []
        ]
        if token:
            self._tokens[token] = (fingerprint, build["id"], now)
        return self._answer(response, build)

    def _answer(self, response: CodeBuildResponse, build: dict[str, Any]) -> Any:
        if self._lost_responses > 0:
            self._lost_responses -= 1
            raise JsonRESTError(
                "ServiceUnavailableException", "response lost after the build started"
            )
        return ActionResult({"build": build})


@contextmanager
def codebuild_like(clock: Callable[[], datetime] | None = None) -> Iterator[CodeBuildLike]:
    model = CodeBuildLike(clock=clock) if clock else CodeBuildLike()
    model.install()
    try:
        yield model
    finally:
        model.uninstall()
