"""The optional registry bucket: versioned, encrypted, private, reachable over TLS only."""

from __future__ import annotations

from ._names import NO_VALUE, get_att, if_, ref, sub

BUCKET_ID = "RegistryBucket"


def bucket_resources() -> dict[str, dict]:
    return {
        BUCKET_ID: {
            "Type": "AWS::S3::Bucket",
            "Condition": "CreateRegistryBucket",
            # Model versions are the rollback targets of deployed functions; never delete them with the stack.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "VersioningConfiguration": {"Status": "Enabled"},
                "LoggingConfiguration": if_("LogRegistryAccess", {
                    "DestinationBucketName": ref("RegistryAccessLogBucket"), "LogFilePrefix": "modelfn-registry/"},
                    NO_VALUE),
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True},
                ]},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            },
        },
        f"{BUCKET_ID}Policy": {
            "Type": "AWS::S3::BucketPolicy",
            "Condition": "CreateRegistryBucket",
            "Properties": {
                "Bucket": {"Ref": BUCKET_ID},
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [get_att(BUCKET_ID, "Arn"), sub(f"${{{BUCKET_ID}.Arn}}/*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }],
                },
            },
        },
    }
