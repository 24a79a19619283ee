"""`layercache-dev demo`: the whole pipeline on an embedded AWS and a local registry.

`command` plays the story; `codebuild` runs the builds CodeBuild is asked for on the rig;
`ecr` puts the registry's images where the recorder and the pruner reach them.
"""
