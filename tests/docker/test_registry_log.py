"""The rig's reading of the registry log (no engine needed)."""

from __future__ import annotations

import json

from layercache_dev.kit.registry import parse_registry_log

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def entry(method: str, uri: str, status: int, written: int = 0) -> str:
    return json.dumps(
        {
            "msg": "response completed",
            "http.request.method": method,
            "http.request.uri": uri,
            "http.response.status": status,
            "http.response.written": written,
        }
    )


def test_downloads_uploads_and_mounts() -> None:
    lines = [
        '127.0.0.1 - - [29/Nov/2026:14:11:45 +0000] "GET /v2/app/blobs/x HTTP/1.1" 200 5',
        entry("GET", f"/v2/team/app/blobs/{DIGEST_A}", 200, 5_000_000),
        entry("GET", f"/v2/team/app/blobs/{DIGEST_B}", 200, 700),  # a config
        entry("HEAD", f"/v2/team/app/blobs/{DIGEST_A}", 200),
        entry("GET", f"/v2/team/app/blobs/{DIGEST_C}", 404, 157),
        entry("GET", "/v2/team/app/manifests/latest", 200, 900),
        entry("PATCH", "/v2/team/app/blobs/uploads/u1?_state=s", 202),
        entry("PUT", f"/v2/team/app/blobs/uploads/u1?_state=s&digest=sha256%3A{'c' * 64}", 201),
        entry("POST", f"/v2/team/app/blobs/uploads/?mount={DIGEST_A}&from=base", 201),
        '{"msg": "not a request", "level": "info"}',
        "{broken json",
    ]
    sizes = {DIGEST_C: 1234}

    traffic = parse_registry_log(lines, lambda digest: sizes[digest], frozenset({DIGEST_A}))

    assert [(blob.repository, blob.digest, blob.size) for blob in traffic.downloads] == [
        ("team/app", DIGEST_A, 5_000_000),
        ("team/app", DIGEST_B, 700),
    ]
    assert traffic.downloaded_bytes == 5_000_700
    assert [blob.digest for blob in traffic.layer_downloads] == [DIGEST_A]
    assert traffic.downloaded_layer_bytes == 5_000_000
    assert [(blob.repository, blob.digest, blob.size) for blob in traffic.uploads] == [
        ("team/app", DIGEST_C, 1234)
    ]
    assert traffic.uploaded_bytes == 1234
    assert traffic.mounts == 1
