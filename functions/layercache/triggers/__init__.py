"""The three build triggers: GitHub webhook, CodeCommit branch update, nightly schedule.

Each decides (`decisions`, `signature`: pure) and hands a build request on to the queue
(`layercache.build_requests`); none waits on CodeBuild. `starting/` starts the builds.
"""
