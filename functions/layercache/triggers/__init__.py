"""The three build triggers: GitHub webhook, CodeCommit branch update, nightly schedule.

Pure decisions (`decisions`, `signature`) sit beside the adapters that talk to AWS
(`store`, `codecommit`) and the service that starts builds exactly once (`builds`).
"""
