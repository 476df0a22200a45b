"""The registry's object store on S3 (or any S3 API): conditional writes do the coordination.

``If-None-Match: *`` makes creates exclusive (also on CompleteMultipartUpload, so large files keep
the guarantee), ``If-Match: <etag>`` makes alias updates compare-and-swap. S3 answers a lost race
with 412 PreconditionFailed, or 409 ConditionalRequestConflict while a competing conditional write
is still in flight; the outcome of that one is unknown, so a create is retried and a CAS reported
as lost (its caller re-reads and tries again).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from functions.constants import AWS_ENDPOINT_URL
from functions.fetch import make_s3_client, s3_failure

from .errors import AlreadyExists, EndpointError, PreconditionFailed, from_fetch_error

__all__ = ["S3Store", "MULTIPART_THRESHOLD", "PART_SIZE"]

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024  # S3 wants parts of at least 5 MiB except the last
_CONFLICT_RETRIES = 8


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, endpoint_url: str | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get(AWS_ENDPOINT_URL) or None
        self.client = client if client is not None else make_s3_client(self.endpoint_url)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception) -> Exception:
        failure = s3_failure(exc, bucket=self.bucket, endpoint=self.endpoint_url)
        return exc if failure is None else from_fetch_error(failure)

    def _call(self, method: str, **kwargs) -> Any:
        """One S3 call; 412/409 come back as the exceptions the registry acts on."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                return getattr(self.client, method)(**kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure is classified here, once
                code = _code(exc)
                if code in ("PreconditionFailed", "412"):
                    raise (AlreadyExists if "IfNoneMatch" in kwargs else PreconditionFailed)(kwargs.get("Key"))
                if code == "ConditionalRequestConflict" or code == "409":
                    if "IfMatch" in kwargs:
                        raise PreconditionFailed(kwargs.get("Key")) from None
                    time.sleep(random.uniform(0, 0.05 * 2 ** attempt))
                    continue
                if code in ("NoSuchKey", "404", "NotFound"):
                    if method in ("get_object", "head_object"):
                        return None
                    if "IfMatch" in kwargs:  # the object to compare with is gone
                        raise PreconditionFailed(kwargs.get("Key")) from None
                raise self._fail(exc) from None
        raise EndpointError(f"S3 kept answering 409 ConditionalRequestConflict for {kwargs.get('Key')}")

    def get(self, key: str) -> tuple[bytes, str] | None:
        response = self._call("get_object", Bucket=self.bucket, Key=self._key(key))
        if response is None:
            return None
        return response["Body"].read(), response["ETag"]

    def exists(self, key: str) -> bool:
        return self._call("head_object", Bucket=self.bucket, Key=self._key(key)) is not None

    def put_new(self, key: str, data: bytes) -> str:
        return self._call("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")["ETag"]

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return self._call("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=etag)["ETag"]

    def put_file_new(self, key: str, path: Path) -> None:
        size = path.stat().st_size
        if size < self.multipart_threshold:
            self.put_new(key, path.read_bytes())
            return
        self._put_multipart(self._key(key), path)

    def _put_multipart(self, full_key: str, path: Path) -> None:
        # The object only appears at CompleteMultipartUpload, which carries If-None-Match, so a
        # large file is as create-exclusive and never-half-visible as a small one.
        upload_id = self._call("create_multipart_upload", Bucket=self.bucket, Key=full_key)["UploadId"]
        try:
            parts = []
            with open(path, "rb") as fh:
                number = 1
                while chunk := fh.read(self.part_size):
                    answer = self._call("upload_part", Bucket=self.bucket, Key=full_key, UploadId=upload_id,
                                        PartNumber=number, Body=chunk)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            self._call("complete_multipart_upload", Bucket=self.bucket, Key=full_key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original failure is the one to report
                pass
            raise

    def _list(self, prefix: str, delimiter: str | None) -> tuple[list[str], list[str]]:
        full = self._key(prefix).rstrip("/") + "/"
        kwargs = {"Bucket": self.bucket, "Prefix": full}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        keys, dirs = [], []
        while True:
            page = self._call("list_objects_v2", **kwargs)
            keys += [obj["Key"][len(full):] for obj in page.get("Contents", ())]
            dirs += [p["Prefix"][len(full):].rstrip("/") for p in page.get("CommonPrefixes", ())]
            if not page.get("IsTruncated"):
                return keys, dirs
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def children(self, prefix: str) -> list[str]:
        keys, dirs = self._list(prefix, "/")
        return sorted(set(keys) | set(dirs))

    def keys(self, prefix: str) -> list[str]:
        full = prefix.rstrip("/") + "/"
        return sorted(full + k for k in self._list(prefix, None)[0])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        kwargs = {"Bucket": self.bucket, "Key": self._key(key)}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        self._call("delete_object", **kwargs)
