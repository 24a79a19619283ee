"""The test kit: what the tests, the demo and the benchmark share.

- template.yaml read as data (`template`, `paths`), and the stack's functions called in
  this process by their `Handler` strings (`functions`, `lambda_context`);
- AWS stand-ins: moto's server with the stack's resources (`embedded_aws`), moto made to
  answer as ECR, CodeBuild, CodeCommit's commit reads and atomic services do (`moto_ecr`,
  `moto_codebuild`, `moto_codecommit`, `moto_atomic`), Lambda's SQS event source
  (`sqs_source`), GitHub deliveries (`github_events`);
- the local rig that stands in for CodeBuild and ECR: what the machine needs
  (`prerequisites`), a registry and its log (`registry`), a standalone BuildKit
  (`buildkit`), the buildspec run as CodeBuild runs it (`buildspec`), all composed by
  `rig.Rig`; the build driver as a module (`driver`); the sample monorepo of a Bake
  file's images (`monorepo`).
"""
