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

moto has no batch builds at all. The model adds what FanOut uses, from the API reference
(StartBuildBatch, BatchGetBuildBatches, ListBuildBatchesForProject, StopBuildBatch) and
the batch buildspec reference: StartBuildBatch (same idempotency and throttling as
StartBuild) reads the build graph from `buildspecOverride`, and the batch's
`buildGroups` list its nodes. Nothing runs by itself: a test starts a node's build
(`start_member`: a build with the batch's and the node's variables and `buildBatchArn`,
as CodeBuild starts one when the nodes it depends on succeeded) and finishes it
(`finish`); `settle_batch` gives the batch the status CodeBuild would.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from moto.backends import get_backend
from moto.codebuild.responses import CodeBuildResponse
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult

from layercache_dev.kit.embedded_aws import ACCOUNT, REGION

IDEMPOTENCY_WINDOW = timedelta(minutes=5)
BATCH_ACTIONS = (
    "start_build_batch",
    "batch_get_build_batches",
    "list_build_batches_for_project",
    "stop_build_batch",
)


@dataclass
class CodeBuildLike:
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    start_calls: int = 0
    _throttles: int = 0
    _lost_responses: int = 0
    _tokens: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    _original: Any = None
    batch_start_calls: int = 0
    _batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    _batch_number: int = 0

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

    def finish(
        self, build_id: str, status: str = "SUCCEEDED", exported: dict[str, str] | None = None
    ) -> None:
        build = self.build(build_id)
        build["buildStatus"] = status
        build["buildComplete"] = True
        build["currentPhase"] = "COMPLETED"
        build["endTime"] = self.clock()
        if exported is not None:
            build["exportedEnvironmentVariables"] = [
                {"name": name, "value": value} for name, value in exported.items()
            ]
        for batch in self._batches.values():
            for group in batch["buildGroups"]:
                summary = group.get("currentBuildSummary") or {}
                if summary.get("arn") == build["arn"]:
                    summary["buildStatus"] = status

    # ------------------------------------------------------------ batch builds
    def batches(self) -> list[dict[str, Any]]:
        return list(self._batches.values())

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._batches[batch_id]

    def graph_of(self, batch_id: str) -> list[dict[str, Any]]:
        """The build graph the batch was started with (its buildspec's batch section)."""
        return list(self._batches[batch_id]["_graph"])

    def start_member(self, batch_id: str, identifier: str) -> dict[str, Any]:
        """Start the build of one node, as CodeBuild does once its dependencies succeeded."""
        batch = self._batches[batch_id]
        node = next(n for n in batch["_graph"] if n["identifier"] == identifier)
        backend = self._backend()
        build = dict(backend.start_build(batch["projectName"], batch["sourceVersion"]))
        build = next(b for b in self.builds() if b["id"] == build["id"])
        variables = {v["name"]: v for v in batch["environment"]["environmentVariables"]} | {
            name: {"name": name, "value": str(value), "type": "PLAINTEXT"}
            for name, value in ((node.get("env") or {}).get("variables") or {}).items()
        }
        build["environment"]["environmentVariables"] = list(variables.values())
        build["buildStatus"] = "IN_PROGRESS"
        build["buildBatchArn"] = batch["arn"]
        group = next(g for g in batch["buildGroups"] if g["identifier"] == identifier)
        if group.get("currentBuildSummary"):
            group.setdefault("priorBuildSummaryList", []).append(group["currentBuildSummary"])
        group["currentBuildSummary"] = {"arn": build["arn"], "buildStatus": "IN_PROGRESS"}
        return build

    def settle_batch(self, batch_id: str) -> str:
        """The batch's status from its nodes': failed as soon as one failed (fast-fail),
        succeeded when all did."""
        batch = self._batches[batch_id]
        statuses = [
            (g.get("currentBuildSummary") or {}).get("buildStatus") for g in batch["buildGroups"]
        ]
        failed = next((s for s in statuses if s not in (None, "IN_PROGRESS", "SUCCEEDED")), None)
        if failed:
            batch["buildBatchStatus"] = "FAILED" if failed != "STOPPED" else "STOPPED"
        elif all(s == "SUCCEEDED" for s in statuses):
            batch["buildBatchStatus"] = "SUCCEEDED"
        return str(batch["buildBatchStatus"])

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

        def start_build_batch(response: CodeBuildResponse) -> Any:
            return model._start_build_batch(response)

        def batch_get_build_batches(response: CodeBuildResponse) -> Any:
            ids = response._get_param("ids") or []
            found = [model._public(model._batches[i]) for i in ids if i in model._batches]
            missing = [i for i in ids if i not in model._batches]
            return ActionResult({"buildBatches": found, "buildBatchesNotFound": missing})

        def list_build_batches_for_project(response: CodeBuildResponse) -> Any:
            project = response._get_param("projectName")
            ids = [i for i, b in model._batches.items() if b["projectName"] == project]
            if response._get_param("sortOrder") != "ASCENDING":
                ids.reverse()
            return ActionResult({"ids": ids})

        def stop_build_batch(response: CodeBuildResponse) -> Any:
            batch = model._batches[response._get_param("id")]
            if batch["buildBatchStatus"] == "IN_PROGRESS":
                batch["buildBatchStatus"] = "STOPPED"
                for group in batch["buildGroups"]:
                    summary = group.get("currentBuildSummary") or {}
                    running = [
                        b
                        for b in model.builds()
                        if b["arn"] == summary.get("arn") and b["buildStatus"] == "IN_PROGRESS"
                    ]
                    for build in running:
                        model.finish(build["id"], "STOPPED")
            return ActionResult({"buildBatch": model._public(batch)})

        for name, method in {
            "start_build_batch": start_build_batch,
            "batch_get_build_batches": batch_get_build_batches,
            "list_build_batches_for_project": list_build_batches_for_project,
            "stop_build_batch": stop_build_batch,
        }.items():
            setattr(CodeBuildResponse, name, method)

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
        for name in BATCH_ACTIONS:
            if name in CodeBuildResponse.__dict__:
                delattr(CodeBuildResponse, name)
        backend = self._backend()
        backend.__dict__.pop("batch_get_builds", None)
        backend.__dict__.pop("stop_build", None)

    def _admit(self, token: str | None, fingerprint: str, now: datetime) -> str | None:
        """A start call's fate: throttled (raises), a repeat of a start within the window
        (the id it started), a mismatched repeat (raises), or new (None)."""
        if self._throttles > 0:
            self._throttles -= 1
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        if not token or token not in self._tokens:
            return None
        seen_fingerprint, started_id, started = self._tokens[token]
        if now - started >= IDEMPOTENCY_WINDOW:
            return None
        if seen_fingerprint != fingerprint:
            raise JsonRESTError(
                "IdempotentParameterMismatchException",
                "The idempotency token was used with different parameters.",
            )
        return started_id

    def _start_build(self, response: CodeBuildResponse) -> Any:
        self.start_calls += 1
        params = {
            "sourceVersion": response._get_param("sourceVersion"),
            "environmentVariablesOverride": response._get_param("environmentVariablesOverride"),
        }
        token, fingerprint, now = (
            response._get_param("idempotencyToken"),
            _fingerprint(params),
            self.clock(),
        )
        started_before = self._admit(token, fingerprint, now)
        if started_before is not None:
            return self._answer(response, self.build(started_before))
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

    def _start_build_batch(self, response: CodeBuildResponse) -> Any:
        self.batch_start_calls += 1
        params = {
            name: response._get_param(name)
            for name in ("sourceVersion", "environmentVariablesOverride", "buildspecOverride")
        }
        token, fingerprint, now = (
            response._get_param("idempotencyToken"),
            _fingerprint(params),
            self.clock(),
        )
        started_before = self._admit(token, fingerprint, now)
        if started_before is not None:
            return self._answer_batch(self._batches[started_before])
        project = response._get_param("projectName")
        if project not in self._backend().codebuild_projects:
            raise JsonRESTError("ResourceNotFoundException", f"Project {project} not found")
        spec = yaml.safe_load(params["buildspecOverride"] or "") or {}
        graph = list((spec.get("batch") or {}).get("build-graph") or [])
        if not graph:
            raise JsonRESTError(
                "InvalidInputException", "the batch buildspec has no batch/build-graph"
            )
        self._batch_number += 1
        batch_id = f"{project}:{uuid.uuid4()}"
        batch = {
            "id": batch_id,
            "arn": f"arn:aws:codebuild:{REGION}:{ACCOUNT}:build-batch/{batch_id}",
            "projectName": project,
            "buildBatchNumber": self._batch_number,
            "buildBatchStatus": "IN_PROGRESS",
            "currentPhase": "SUBMITTED",
            "startTime": now,
            "sourceVersion": params["sourceVersion"] or "refs/heads/main",
            "environment": {
                "environmentVariables": [
                    {
                        "name": o["name"],
                        "value": o.get("value", ""),
                        "type": o.get("type", "PLAINTEXT"),
                    }
                    for o in params["environmentVariablesOverride"] or []
                ]
            },
            "buildGroups": [
                {
                    "identifier": node["identifier"],
                    "dependsOn": list(node.get("depend-on") or []),
                    "ignoreFailure": bool(node.get("ignore-failure", False)),
                }
                for node in graph
            ],
            "_graph": graph,
        }
        self._batches[batch_id] = batch
        if token:
            self._tokens[token] = (fingerprint, batch_id, now)
        return self._answer_batch(batch)

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in batch.items() if not name.startswith("_")}

    def _answer_batch(self, batch: dict[str, Any]) -> Any:
        if self._lost_responses > 0:
            self._lost_responses -= 1
            raise JsonRESTError(
                "ServiceUnavailableException", "response lost after the batch started"
            )
        return ActionResult({"buildBatch": self._public(batch)})

    def _answer(self, response: CodeBuildResponse, build: dict[str, Any]) -> Any:
        if self._lost_responses > 0:
            self._lost_responses -= 1
            raise JsonRESTError(
                "ServiceUnavailableException", "response lost after the build started"
            )
        return ActionResult({"build": build})


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


@contextmanager
def codebuild_like(clock: Callable[[], datetime] | None = None) -> Iterator[CodeBuildLike]:
    model = CodeBuildLike(clock=clock) if clock else CodeBuildLike()
    model.install()
    try:
        yield model
    finally:
        model.uninstall()
