"""The progress stream is summarised while it streams: the driver's memory does not grow
with the build's log. A benchmark-style check, measured as a ratio, never as a time.

A fake `docker buildx build` prints LOG_BYTES of BuildKit rawjson progress (STEPS steps
sharing it as their output, the last one failing); the driver reads it
through `run_attempt`, as on CodeBuild, while tracemalloc records its peak allocation.
Keeping the stream (what the driver did before) costs at least twice the log's volume;
reading it as it streams costs a small, fixed amount.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tracemalloc
from pathlib import Path

from layercache_dev.kit.driver import build_driver

LOG_BYTES = 16 * 1024 * 1024
STEPS = 300
MAX_PEAK_RATIO = 0.05  # of the log's volume

FAKE_BUILDX = '''\
#!{python}
"""`docker buildx build --progress=rawjson` of a long, chatty build whose last step fails."""
import base64, json, sys

STEPS = {steps}
out = sys.stdout
written = 0
chunk = "compiling module %05d: " + "x" * 2900 + "\\n"


def emit(status):
    global written
    text = json.dumps(status, indent=2) + "\\n"
    written += len(text)
    out.write(text)


for step in range(1, STEPS + 1):
    digest = "sha256:%064x" % step
    name = "[%d/%d] RUN make part-%d" % (step, STEPS, step)
    emit({{"vertexes": [{{"digest": digest, "name": name, "started": "2026-11-29T10:00:00Z"}}]}})
    line = 0
    while written < {volume} * step // STEPS:
        line += 1
        data = base64.b64encode((chunk % line).encode()).decode()
        emit({{"logs": [{{"vertex": digest, "stream": 1, "data": data}}]}})
    vertex = {{"digest": digest, "name": name, "started": "2026-11-29T10:00:00Z",
              "completed": "2026-11-29T10:00:01Z"}}
    if step == STEPS:
        vertex["error"] = "process \\"make\\" did not complete successfully: exit code: 2"
    emit({{"vertexes": [vertex]}})
out.write("ERROR: failed to solve: process did not complete successfully: exit code: 2\\n")
with open({count!r}, "w") as count:
    json.dump({{"bytes": written}}, count)
sys.exit(1)
'''


def test_peak_memory_stays_a_small_fraction_of_the_log(tmp_path: Path) -> None:
    count = tmp_path / "count.json"
    docker = tmp_path / "docker"
    docker.write_text(
        FAKE_BUILDX.format(python=sys.executable, steps=STEPS, volume=LOG_BYTES, count=str(count))
    )
    docker.chmod(0o755)
    metadata = tmp_path / "metadata.json"

    with Path(os.devnull).open("w") as devnull, contextlib.redirect_stderr(devnull):
        tracemalloc.start()
        try:
            attempt = build_driver.run_attempt(
                str(docker), ["buildx", "build", "--metadata-file", str(metadata)], metadata
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    emitted = json.loads(count.read_text())
    ratio = peak / emitted["bytes"]
    assert emitted["bytes"] >= LOG_BYTES
    assert ratio < MAX_PEAK_RATIO, (
        f"peak {peak / 2**20:.1f} MiB for {emitted['bytes'] / 2**20:.1f} MiB of progress "
        f"(ratio {ratio:.3f}, limit {MAX_PEAK_RATIO})"
    )
    # ... and the summary is whole: every step seen, the failed one named.
    summary = attempt.summary
    assert attempt.returncode == 1
    assert len(summary.steps) == STEPS
    failed = f"[{STEPS}/{STEPS}] RUN make part-{STEPS}"
    assert build_driver.failure_reason(summary).startswith(f"{failed}: process")
