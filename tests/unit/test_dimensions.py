"""One spelling per metric dimension: CloudWatch tells `Trigger` and `trigger` apart.

The handlers and the recorder take their dimension names from `layercache.dimensions`,
and every metrics test checks the EMF it reads against them (tests/conftest.py's
`emitted_metrics`); here, the names themselves and the recorder's dimensions.
"""

from __future__ import annotations

import pytest

from layercache import dimensions
from layercache.build_records import BuildStatus
from layercache.recording.metrics import image_metric_sets, metric_dimensions
from tests.conftest import emitted_metrics


def test_every_name_is_lower_case_and_one_of_a_kind() -> None:
    assert all(name == name.lower() for name in dimensions.ALL)
    assert len({name.casefold() for name in dimensions.ALL}) == len(dimensions.ALL)


def test_the_recorders_dimensions_are_declared_names() -> None:
    assert set(metric_dimensions({"trigger": "github", "mode": "normal"})) == {
        dimensions.TRIGGER,
        dimensions.MODE,
    }


def test_the_per_image_dimensions_are_declared_names() -> None:
    image = {"image": "api", "build_seconds": 1}
    record = {"trigger": "github", "mode": "normal", "images": [image]}

    [metric_set] = image_metric_sets(record, BuildStatus.SUCCEEDED)

    assert dimensions.IMAGE == "image"
    assert dimensions.IMAGE in dimensions.ALL
    assert set(metric_set.dimensions) == {dimensions.TRIGGER, dimensions.MODE, dimensions.IMAGE}


def test_emf_with_a_second_spelling_is_refused() -> None:
    document = (
        '{"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{"Namespace": "layercache",'
        ' "Dimensions": [["service", "Trigger"]], "Metrics": [{"Name": "BuildsRequested"}]}]},'
        ' "service": "layercache", "Trigger": "github", "BuildsRequested": [1.0]}'
    )
    with pytest.raises(AssertionError, match="Trigger"):
        emitted_metrics(document)
