"""Developer-side tools of layercache: they run on a workstation or in CI, never in Lambda."""
