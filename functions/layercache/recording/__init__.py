"""After the build: record each CodeBuild build, report its status, notify on failure."""
