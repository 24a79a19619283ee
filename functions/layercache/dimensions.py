"""The names of the CloudWatch metric dimensions the functions emit (EMF).

CloudWatch matches dimension names exactly: `Trigger` and `trigger` would be two
dimensions, and every metric split between them would show half its data on a dashboard
or alarm that names one. So every function takes its names from here, all lower case as
Powertools' own `service` dimension and the metrics documentation (docs/recording.md).
"""

from __future__ import annotations

SERVICE = "service"  # Powertools adds it to every metric (POWERTOOLS_SERVICE_NAME)
TRIGGER = "trigger"  # what asked for the build: a `build_records.Trigger` value
MODE = "mode"  # how the build treats the cache: a `build_records.BuildMode` value
REASON = "reason"  # why a trigger refused a delivery
IMAGE = "image"  # with a Bake file: the image (target) a per-image metric is about

ALL = frozenset({SERVICE, TRIGGER, MODE, REASON, IMAGE})
