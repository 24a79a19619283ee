"""Safe ECR pruning: a pure plan of what to keep and why, and an adapter that carries it out.

- `model`: the images of a repository as plain data, and the tag conventions of the build driver.
- `plan`: `make_plan(images, policy, now)`, a pure function from images and a policy to a plan.
- `ecr`: reads a repository (DescribeImages, BatchGetImage) and deletes in safe order.
- `in_use`: the digests ECS tasks and Lambda functions run, so they are never deleted.
- `repositories`: with a Bake file, the targets' repositories under the stack's prefix, as
  the builds table remembers them.
- `service`: one run over the configured repositories; `dry_run_plan` for benchmarks.
"""
