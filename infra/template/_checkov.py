"""checkov checks that do not apply to a modelfn stack, each skipped on its resource with the reason
written into the template (``Metadata.checkov.skip``), never skipped wholesale on the command line.

Where a check guards something a user may need, the template offers it as a parameter (reserved
concurrency, X-Ray tracing, a KMS key, access logs on the registry bucket) and the reason says so.
"""

from __future__ import annotations

REASONS = {
    "CKV_AWS_116": "API Gateway invokes the function synchronously and every error reaches the caller in the "
                   "response; a dead-letter queue only receives failed asynchronous invocations",
    "CKV_AWS_117": "the function reaches nothing private (its bundle is in the image or read from S3 over TLS); "
                   "a VPC would add NAT or endpoint cost and cold-start latency without isolating anything",
    "CKV_AWS_120": "answers are inferences on POST bodies, which API Gateway's cache does not key on, and a cache "
                   "cluster bills by the hour whether used or not",
    "CKV_AWS_73": "X-Ray tracing of the stage and the functions is the Tracing parameter, off by default "
                  "because every traced request is billed",
}


def skips(*check_ids: str) -> dict:
    """The Metadata entry that skips ``check_ids`` on one resource, with their reasons."""
    return {"checkov": {"skip": [{"id": check_id, "comment": REASONS[check_id]} for check_id in check_ids]}}
