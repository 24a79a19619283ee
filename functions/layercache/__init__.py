"""layercache: start cached Docker image builds on CodeBuild, record them, prune ECR safely."""
