"""The `layercache` command: a deployed stack's build history, single builds and health.

It reads what the stack records (BuildsTable, the failure queues, the pruner's log)
through boto3, so it needs only the user's AWS credentials, never the development kit.
"""
