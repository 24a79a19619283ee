"""The pipeline's own overhead: cold-start imports, the webhook's answer and the time until
StartBuild, the pruner's plan.

- cold start: each function's handler module imported in a fresh process per sample
  (`python -c`: the interpreter's start plus the import, as a Lambda cold start pays
  them), timed from outside by this process, against the same for bare boto3 with one
  client (`BASELINE_CODE`); the samples interleave baseline and handlers, so a loaded
  machine slows them alike, and one unmeasured round first writes the bytecode caches.
  Each sample also records the child's CPU time (user + system, which other load on
  the machine alters least) and the import alone, timed inside the child;
- webhook: GitHubWebhookFunction's handler (found by its template Handler) called
  in-process against moto with the template's own environment, one signed push of a
  new commit per delivery, timed until it answers 202 (it verifies the signature,
  decides and sends one BuildRequestMessage to BuildRequestQueue, SQS FIFO). Right
  after each answer the queue is polled as Lambda's event source would
  (`FifoEventSource`) and BuildStarterFunction's handler invoked; the time until
  StartBuild runs from the delivery's arrival until CodeBuild (moto, made to answer as
  CodeBuild does by `CodeBuildLike`) accepted the build. A tenth of the deliveries (at
  least 5), spread among the others, meet StartBuild throttled;
- pruner: `make_plan` on plain data, and `dry_run_plan` against moto's ECR seeded with
  the same manifests, DescribeImages paged as ECR pages it (moto returns one page).

The webhook and the moto part run in a child process (`python -m
layercache_dev.bench.overhead PART --size N --out FILE`): moto's patching, the functions'
environment and the Powertools log lines stay out of the benchmark's own process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from layercache import aws as aws_budget
from layercache.pruning.model import (
    BUILDKIT_CACHE_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    parse_config_media_type,
    parse_index_children,
)
from layercache.pruning.plan import Policy, make_plan
from layercache_dev.kit.functions import function_handler_callable
from layercache_dev.kit.lambda_context import FakeLambdaContext
from layercache_dev.kit.registry import Manifest
from layercache_dev.kit.template import function_handler, load_template

REGION = "us-east-1"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"
# A handler's cold start: the import, also timed inside the child (the import alone).
_TIMED_IMPORT = (
    "import importlib, sys, time\n"
    "started = time.perf_counter()\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(time.perf_counter() - started)\n"
)
# What a function that only needs boto3 pays: the baseline of the cold-start ratio.
BASELINE_CODE = 'import boto3; boto3.client("dynamodb")'
COLD_START_TARGET = 1.25  # a handler's whole-process import, at most this x the baseline


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of `values`."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "layercache",
            "POWERTOOLS_SERVICE_NAME": "layercache",
        }
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return env


# ---------------------------------------------------------------- cold start


def function_modules() -> dict[str, str]:
    """Each function of the template: logical id -> its handler's module."""
    resources = load_template()["Resources"]
    return {
        logical_id: function_handler(logical_id).rpartition(".")[0]
        for logical_id, spec in resources.items()
        if spec.get("Type") == "AWS::Serverless::Function"
    }


@dataclass(frozen=True)
class ProcessSample:
    """One fresh process run to its end."""

    wall_seconds: float  # from spawn to exit, timed here
    cpu_seconds: float  # its user + system CPU time: what other load on the machine alters least
    output: str


def _process_sample(arguments: Sequence[str], env: dict[str, str]) -> ProcessSample:
    """Run `python ARGUMENTS` to its end (this process starts no other child meanwhile, so
    the growth of its children's CPU time is this child's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, check=True, env=env
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return ProcessSample(wall, cpu, done.stdout)


def cold_start_imports(runs: int) -> dict[str, Any]:
    """Whole-process import of each handler module against bare boto3 with one client.

    A sample is one fresh `python -c` process, timed from spawn to exit here; `runs`
    rounds (one unmeasured round first, which writes the bytecode caches), each running
    the baseline and every handler once, so the ratios compare samples taken side by side.
    """
    env = _child_env()
    modules = function_modules()
    baseline: list[ProcessSample] = []
    handlers: dict[str, list[ProcessSample]] = {logical_id: [] for logical_id in modules}
    for round_number in range(runs + 1):
        sample = _process_sample(["-c", BASELINE_CODE], env)
        if round_number:
            baseline.append(sample)
        for logical_id, module in modules.items():
            sample = _process_sample(["-c", _TIMED_IMPORT, module], env)
            if round_number:
                handlers[logical_id].append(sample)
    samples = {logical_id: (module, handlers[logical_id]) for logical_id, module in modules.items()}
    return cold_start_figures(baseline, samples)


def cold_start_figures(
    baseline: Sequence[ProcessSample],
    functions: Mapping[str, tuple[str, Sequence[ProcessSample]]],
) -> dict[str, Any]:
    """The cold-start figures: the baseline's medians, and per function (logical id ->
    module, its samples) its medians (ms) and their ratios to the baseline's, in wall time
    (the target's measure) and in CPU time (which a loaded machine alters least)."""
    baseline_ms = statistics.median(s.wall_seconds for s in baseline) * 1000
    baseline_cpu_ms = statistics.median(s.cpu_seconds for s in baseline) * 1000
    figures: dict[str, Any] = {}
    for logical_id, (module, samples) in functions.items():
        median_ms = statistics.median(s.wall_seconds for s in samples) * 1000
        cpu_ms = statistics.median(s.cpu_seconds for s in samples) * 1000
        alone_ms = statistics.median(float(s.output.split()[-1]) for s in samples) * 1000
        ratio = median_ms / baseline_ms
        figures[logical_id] = {
            "module": module,
            "median_ms": round(median_ms, 1),
            "max_ms": round(max(s.wall_seconds for s in samples) * 1000, 1),
            "cpu_median_ms": round(cpu_ms, 1),
            "import_median_ms": round(alone_ms, 1),
            "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ms / baseline_cpu_ms, 3),
            "met": ratio <= COLD_START_TARGET,
        }
    return {
        "runs": len(baseline),
        "target_ratio": COLD_START_TARGET,
        "baseline": {
            "code": BASELINE_CODE,
            "median_ms": round(baseline_ms, 1),
            "max_ms": round(max(s.wall_seconds for s in baseline) * 1000, 1),
            "cpu_median_ms": round(baseline_cpu_ms, 1),
        },
        "functions": figures,
    }


# ---------------------------------------------------------------- a child process per part


def run_part(part: str, size: int) -> dict[str, Any]:
    """Run `part` ("webhook" or "pruner-moto") in a child process and return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run(
            [sys.executable, "-m", "layercache_dev.bench.overhead", part, "--size", str(size),
             "--out", str(out)],
            check=True, env=_child_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _count_calls() -> Counter[str]:
    """Count every AWS call boto3's default session makes, by service:operation."""
    import boto3

    calls: Counter[str] = Counter()

    def record(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}:{model.name}"] += 1

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register("provide-client-params.*.*", record)
    return calls


# CodeBuild refuses this many StartBuild attempts of each throttled build: the most the
# starter's client (standard retry mode, jittered exponential backoff) absorbs within one
# invocation, so the build starts as soon as the throttling ends.
THROTTLED_REFUSALS = aws_budget.STANDARD.attempts - 1
# A throttled delivery waits out real backoff (seconds): time fewer of them.
THROTTLED_SHARE = 10
MIN_THROTTLED = 5
MAX_STARTER_POLLS = 5


@dataclass(frozen=True)
class DeliveryTimes:
    """One delivery, from its arrival at the webhook to the StartBuild of its build."""

    throttled: bool
    answer_ms: float  # the webhook called until it returned 202
    answer_own_ms: float  # the same, time inside moto taken out
    until_start_ms: float  # the delivery's arrival until StartBuild accepted its build
    starter_ms: float  # BuildStarterFunction's invocation(s) for the request
    starter_own_ms: float
    start_attempts: int  # StartBuild calls CodeBuild received (refused ones included)
    invocations: int  # starter invocations until the build started
    webhook_calls: Counter[str]
    starter_calls: Counter[str]


def throttled_deliveries(iterations: int) -> int:
    return max(MIN_THROTTLED, iterations // THROTTLED_SHARE)


def delivery_schedule(iterations: int, throttled: int) -> list[bool]:
    """Which deliveries have StartBuild throttled: `throttled` of them, spread evenly among
    the `iterations` others, so both kinds meet a table of the same size."""
    total = iterations + throttled
    marked = {(2 * n + 1) * total // (2 * throttled) for n in range(throttled)}
    return [position in marked for position in range(total)]


def _summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "max_ms": round(max(samples), 2),
    }


def _per_delivery(counters: Sequence[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return {k: round(v / len(counters), 3) for k, v in sorted(total.items())}


def _start_build_times() -> list[tuple[float, str]]:
    """(perf_counter, build id) of every StartBuild CodeBuild accepted, as the caller got it."""
    import boto3

    accepted: list[tuple[float, str]] = []

    def record(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code < 300 and "build" in parsed:
            accepted.append((time.perf_counter(), str(parsed["build"]["id"])))

    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register("after-call.codebuild.StartBuild", record)
    return accepted


def webhook_latency(iterations: int) -> dict[str, Any]:
    """The webhook and the build starter in-process on moto, as template.yaml wires them.

    Each delivery is a signed push of a new commit on top of the previous one. The webhook
    is timed until it answers; right after, BuildRequestQueue is polled as Lambda's event
    source would and BuildStarterFunction invoked with what it holds; the time until
    StartBuild runs from the delivery's arrival until CodeBuild accepted the build. A
    share of the deliveries meet CodeBuild refusing StartBuild THROTTLED_REFUSALS times.
    """
    import boto3
    from moto import mock_aws

    from layercache.build_records import BuildsTable, BuildStatus, build_pk
    from layercache_dev.kit.embedded_aws import StackNames, deploy_stack
    from layercache_dev.kit.github_events import fake_sha, function_url_event, push_payload
    from layercache_dev.kit.moto_codebuild import codebuild_like
    from layercache_dev.kit.sqs_source import FifoEventSource

    throttled = throttled_deliveries(iterations)
    schedule = [False, *delivery_schedule(iterations, throttled)]  # the first one warms up
    with mock_aws(), codebuild_like() as codebuild:
        calls = _count_calls()
        accepted = _start_build_times()
        stack = deploy_stack(
            lambda service: boto3.client(service, region_name=REGION),  # type: ignore[call-overload]
            endpoint="",  # moto's in-process mock
            parameters={"SourceRepository": "octo-org/service"},
            names=StackNames(
                "layercache-builds", "layercache-image-build", "team/service", "layercache-webhook"
            ),
        )
        os.environ.update(stack.environment("GitHubWebhookFunction"))
        os.environ.update(stack.environment("BuildStarterFunction"))
        table = BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))

        starter_handler = function_handler_callable("BuildStarterFunction")
        handler = function_handler_callable("GitHubWebhookFunction")

        in_aws = _time_inside_moto()
        # The starter's invocations: (seconds, seconds inside moto, AWS calls made).
        invocations: list[tuple[float, float, Counter[str]]] = []

        def timed_starter(event: dict[str, Any], context: Any) -> Any:
            calls_before, aws_before = Counter(calls), in_aws[0]
            started = time.perf_counter()
            try:
                return starter_handler(event, context)
            finally:
                elapsed = time.perf_counter() - started
                invocations.append((elapsed, in_aws[0] - aws_before, calls - calls_before))

        source = FifoEventSource(
            boto3.client("sqs", region_name=REGION), stack.queue_url, timed_starter
        )
        context = FakeLambdaContext("layercache-bench", aws_request_id="bench")
        head = fake_sha("bench base")
        events = []
        for number in range(len(schedule)):
            commit = fake_sha(f"bench commit {number}")
            events.append(function_url_event("push", push_payload(after=commit, before=head)))
            head = commit
        times: list[DeliveryTimes] = []
        for event, throttle in zip(events, schedule, strict=True):
            codebuild.throttle(THROTTLED_REFUSALS if throttle else 0)
            start_calls, seen_starts, seen_invocations = (
                codebuild.start_calls, len(accepted), len(invocations)
            )  # fmt: skip
            calls_before, aws_before = Counter(calls), in_aws[0]
            arrived = time.perf_counter()
            response = handler(event, context)
            answered = time.perf_counter()
            answer_in_aws = in_aws[0] - aws_before
            webhook_calls = calls - calls_before
            if response["statusCode"] != 202 or "request_id" not in json.loads(response["body"]):
                raise RuntimeError(f"the webhook answered {response}")
            failure: Exception | None = None
            for _ in range(MAX_STARTER_POLLS):
                try:
                    source.poll_once()
                except Exception as error:  # noqa: BLE001 - the batch failed; it comes back
                    failure = error
                if len(accepted) > seen_starts:
                    break
            if len(accepted) != seen_starts + 1:
                raise RuntimeError(
                    f"{len(accepted) - seen_starts} builds started for a delivery"
                ) from failure
            started_at, build_id = accepted[-1]
            runs = invocations[seen_invocations:]
            times.append(
                DeliveryTimes(
                    throttled=throttle,
                    answer_ms=(answered - arrived) * 1000,
                    answer_own_ms=(answered - arrived - answer_in_aws) * 1000,
                    until_start_ms=(started_at - arrived) * 1000,
                    starter_ms=sum(run[0] for run in runs) * 1000,
                    starter_own_ms=sum(run[0] - run[1] for run in runs) * 1000,
                    start_attempts=codebuild.start_calls - start_calls,
                    invocations=len(runs),
                    webhook_calls=webhook_calls,
                    starter_calls=sum((run[2] for run in runs), Counter()),
                )
            )
            # The build ends before the next push, as the recorder would then record it: the
            # next request finds no running build of the branch to supersede.
            codebuild.finish(build_id)
            table.set_fields(build_pk(build_id), {"status": BuildStatus.SUCCEEDED.value})
    return webhook_figures(times)


def webhook_figures(times: Sequence[DeliveryTimes]) -> dict[str, Any]:
    first, measured = times[0], times[1:]
    plain = [t for t in measured if not t.throttled]
    throttled = [t for t in measured if t.throttled]
    webhook_calls = _per_delivery([t.webhook_calls for t in plain])
    starter_calls = _per_delivery([t.starter_calls for t in plain])
    answer = _summary([t.answer_ms for t in plain])
    starter = _summary([t.starter_ms for t in plain])
    return {
        # The webhook's answer: called with a signed push until it returned 202.
        "iterations": len(plain),
        **answer,
        "own_median_ms": round(statistics.median(t.answer_own_ms for t in plain), 2),
        "own_p99_ms": round(percentile([t.answer_own_ms for t in plain], 0.99), 2),
        "first_call_ms": round(first.answer_ms, 2),
        "aws_calls_per_delivery": round(sum(webhook_calls.values()), 3),
        "aws_calls_by_operation": webhook_calls,
        # From the delivery's arrival until CodeBuild accepted its StartBuild.
        "until_start_build": _summary([t.until_start_ms for t in plain]),
        "starter": {
            **starter,
            "own_median_ms": round(statistics.median(t.starter_own_ms for t in plain), 2),
            "own_p99_ms": round(percentile([t.starter_own_ms for t in plain], 0.99), 2),
            "first_call_ms": round(first.starter_ms, 2),
            "aws_calls_per_request": round(sum(starter_calls.values()), 3),
            "aws_calls_by_operation": starter_calls,
        },
        "throttled": {
            "deliveries": len(throttled),
            "refusals_per_build": THROTTLED_REFUSALS,
            "start_build_calls_per_build": round(
                statistics.mean(t.start_attempts for t in throttled), 2
            ),
            "starter_invocations_per_request": round(
                statistics.mean(t.invocations for t in throttled), 2
            ),
            "answer": _summary([t.answer_ms for t in throttled]),
            "until_start_build": _summary([t.until_start_ms for t in throttled]),
            "starter": _summary([t.starter_ms for t in throttled]),
        },
    }


def _time_inside_moto() -> list[float]:
    """Accumulate the seconds spent answering AWS calls inside moto (a one-item list)."""
    from moto.core.botocore_stubber import BotocoreStubber

    spent = [0.0]
    original = BotocoreStubber.__call__

    def timed(self: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    BotocoreStubber.__call__ = timed  # type: ignore[method-assign]
    return spent


# ---------------------------------------------------------------- the pruner


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _image_manifest(name: str, config_type: str, layer_type: str, layers: int) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": _digest(f"{name}/c"), "size": 1500},
            "layers": [
                {"mediaType": layer_type, "digest": _digest(f"{name}/{n}"), "size": 40_000_000}
                for n in range(layers)
            ],
        }
    )


def repository_manifests(count: int, now: datetime = NOW) -> list[Manifest]:
    """`count` manifests as a year of builds leaves them: per build an index (tagged) with a
    platform and an attestation manifest, and a cache manifest (the newest tagged)."""
    builds = max(1, count // 4)
    branches = max(1, min(25, builds // 20))
    newest: dict[str, int] = {}
    for number in range(builds):
        newest[f"branch-{number % branches}" if number % branches else "main"] = number
    manifests: list[Manifest] = []
    for number in range(builds):
        branch = f"branch-{number % branches}" if number % branches else "main"
        pushed = now - timedelta(days=365 * (builds - number) / builds)
        sha = hashlib.sha1(f"build {number}".encode(), usedforsecurity=False).hexdigest()
        platform = _image_manifest(f"{number}/amd64", OCI_CONFIG, OCI_LAYER, 5)
        attestation = _image_manifest(f"{number}/att", OCI_CONFIG, IN_TOTO, 1)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": _digest(platform),
                        "size": len(platform),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": _digest(attestation),
                        "size": len(attestation),
                        "annotations": {
                            "vnd.docker.reference.digest": _digest(platform),
                            "vnd.docker.reference.type": "attestation-manifest",
                        },
                        "platform": {"architecture": "unknown", "os": "unknown"},
                    },
                ],
            }
        )
        cache = _image_manifest(f"{number}/cache", BUILDKIT_CACHE_CONFIG, OCI_LAYER, 8)
        current = newest[branch] == number
        tags = [sha, f"{branch}-{sha[:7]}"] + ([branch] if current else [])
        if current and branch == "main":
            tags.append("latest")
        manifests += [
            Manifest(_digest(platform), platform, OCI_MANIFEST, (), pushed),
            Manifest(_digest(attestation), attestation, OCI_MANIFEST, (), pushed),
            Manifest(_digest(index), index, OCI_INDEX, tuple(tags), pushed),
            Manifest(
                _digest(cache), cache, OCI_MANIFEST, (f"cache-{branch}",) if current else (), pushed
            ),
        ]
    return manifests


def as_images(manifests: Sequence[Manifest]) -> list[Image]:
    return [
        Image(
            digest=m.digest,
            pushed_at=m.pushed_at,
            tags=m.tags,
            size_bytes=len(m.text),
            media_type=m.media_type,
            config_media_type=None
            if m.media_type == OCI_INDEX
            else parse_config_media_type(m.text),
            children=parse_index_children(m.text) if m.media_type == OCI_INDEX else (),
        )
        for m in manifests
    ]


def plan_on_plain_data(count: int, runs: int) -> dict[str, Any]:
    images = as_images(repository_manifests(count))
    samples = []
    plan = None
    for _ in range(runs):
        started = time.perf_counter()
        plan = make_plan(images, Policy(), NOW)
        samples.append((time.perf_counter() - started) * 1000)
    assert plan is not None
    return {
        "images": len(images),
        "median_ms": round(statistics.median(samples), 1),
        "runs": runs,
        "kept": len(plan.kept),
        "planned_deletions": len(plan.deleted),
    }


def _page_describe_images_as_ecr() -> None:
    """moto returns every image in one DescribeImages page; ECR pages at maxResults (<= 1000)."""
    from moto.ecr.responses import ECRResponse

    from layercache_dev.kit.moto_ecr import ecr_like_describe_images

    ECRResponse.describe_images = ecr_like_describe_images(  # type: ignore[method-assign,assignment]
        ECRResponse.describe_images
    )


def pruner_on_moto(count: int) -> dict[str, Any]:
    """`dry_run_plan` against moto's ECR seeded with `count` manifests."""
    import boto3
    from moto import mock_aws

    from layercache.pruning.service import dry_run_plan
    from layercache_dev.kit.moto_ecr import put_manifests

    manifests = repository_manifests(count)
    with mock_aws():
        _page_describe_images_as_ecr()
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName="team/service")
        started = time.perf_counter()
        put_manifests(ecr, "team/service", manifests)
        seeding_seconds = time.perf_counter() - started
        calls = _count_calls()
        client = boto3.client("ecr", region_name=REGION)
        started = time.perf_counter()
        plan, aws_calls = dry_run_plan(client, "team/service", Policy(), NOW)
        seconds = time.perf_counter() - started
    return {
        "images": len(plan.decisions),
        "seconds": round(seconds, 3),
        "aws_calls": aws_calls,
        "aws_calls_by_operation": dict(sorted(calls.items())),
        "kept": len(plan.kept),
        "planned_deletions": len(plan.deleted),
        "seeding_seconds": round(seeding_seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one part of the overhead benchmark")
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument(
        "--size", type=int, required=True,
        help="deliveries (webhook), images (pruner-moto) or samples per module (cold-start)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = PARTS[args.part](args.size)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


PARTS = {
    "webhook": webhook_latency,
    "pruner-moto": pruner_on_moto,
    "cold-start": cold_start_imports,
}


if __name__ == "__main__":
    raise SystemExit(main())
