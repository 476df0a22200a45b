"""AWS Signature Version 4 for the HTTP clients people already use, on botocore's signer.

    SigV4Auth(region=None, service=None)           an ``httpx.Auth``: httpx, and through
                                                    ``http_client=httpx.Client(auth=...)`` the OpenAI client
    RequestsSigV4Auth(region=None, service=None)   a ``requests`` auth: requests, and huggingface_hub's
                                                    InferenceClient through its requests session

Credentials come from the standard AWS chain (environment, shared files, SSO, container and instance
roles) through botocore, resolved on the first request and refreshed by botocore as they expire. The
service and region are read from the URL where it says them
(``https://{id}.execute-api.{region}.amazonaws.com``, Lambda function URLs, the SageMaker runtime);
elsewhere (loopback, custom domains) the service is ``execute-api`` and the region the chain's
(``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's). No cryptography is written here: the
canonical request, the string to sign and the signature are botocore's ``SigV4Auth``.
"""

from __future__ import annotations

import re
import threading
from typing import Mapping
from urllib.parse import urlsplit

import httpx

from .errors import CredentialsError

try:  # requests is optional: only RequestsSigV4Auth needs it, and requests accepts any callable auth
    from requests.auth import AuthBase as _RequestsAuthBase
except ImportError:  # pragma: no cover - requests ships with most environments that want this class
    _RequestsAuthBase = object

DEFAULT_SERVICE = "execute-api"
# (host pattern, service); the region is the named group.
_AWS_HOSTS = (
    (re.compile(r"^[a-z0-9]+\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$"), "execute-api"),
    (re.compile(r"^[a-z0-9]+\.lambda-url\.(?P<region>[a-z0-9-]+)\.on\.aws$"), "lambda"),
    (re.compile(r"^runtime\.sagemaker\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$"), "sagemaker"),
)
# Signed besides host: headers a proxy or HTTP library does not rewrite on the way. Everything the
# OpenAI client adds (user agent, retry counters, x-stainless-*) stays unsigned, as it may change.
_SIGNED = ("content-type",)


def infer_service_region(url: str) -> tuple[str | None, str | None]:
    """(service, region) named by an AWS endpoint URL, or (None, None) for any other host."""
    host = (urlsplit(url).hostname or "").lower()
    for pattern, service in _AWS_HOSTS:
        match = pattern.match(host)
        if match:
            return service, match.group("region")
    return None, None


class _Signer:
    """Credentials, region and service for one auth object; signs (method, url, headers, body)."""

    def __init__(self, region: str | None, service: str | None, credentials, session):
        self.region, self.service = region, service
        self._credentials = credentials
        self._session = session
        self._lock = threading.Lock()

    def _frozen_credentials(self, url: str):
        with self._lock:
            if self._credentials is None:
                session = self._session
                if session is None:
                    import botocore.session

                    session = self._session = botocore.session.Session()
                self._credentials = session.get_credentials()
            if self._credentials is None:
                raise CredentialsError(
                    f"no AWS credentials found to sign the request to {url} (the API uses IAM auth)",
                    hint="run `aws configure` or `aws sso login`, set AWS_PROFILE, or set AWS_ACCESS_KEY_ID "
                         "and AWS_SECRET_ACCESS_KEY")
            creds = self._credentials
        return creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds

    def _service_region(self, url: str) -> tuple[str, str]:
        service, region = infer_service_region(url)
        service = self.service or service or DEFAULT_SERVICE
        region = self.region or region
        if region is None:
            import botocore.session

            session = self._session or botocore.session.Session()
            region = session.get_config_variable("region")
        if not region:
            raise CredentialsError(f"cannot tell the AWS region to sign the request to {url} for",
                                   hint="pass region=..., or set AWS_REGION or AWS_DEFAULT_REGION")
        return service, region

    def sign(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """The headers to add (Authorization, X-Amz-Date, X-Amz-Security-Token when the credentials
        are temporary) for a request whose Host header is ``headers['host']`` or the URL's."""
        from botocore.auth import SigV4Auth as BotocoreSigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._frozen_credentials(url)
        service, region = self._service_region(url)
        lower = {k.lower(): v for k, v in headers.items()}
        to_sign = {name: lower[name] for name in _SIGNED if name in lower}
        if "host" in lower:  # exactly what goes on the wire, port included where not the default
            to_sign["host"] = lower["host"]
        request = AWSRequest(method=method.upper(), url=url, data=body or b"", headers=to_sign)
        BotocoreSigV4Auth(credentials, service, region).add_auth(request)
        added = {"Authorization": request.headers["Authorization"], "X-Amz-Date": request.headers["X-Amz-Date"]}
        if "X-Amz-Security-Token" in request.headers:
            added["X-Amz-Security-Token"] = request.headers["X-Amz-Security-Token"]
        return added


class SigV4Auth(httpx.Auth):
    """SigV4 signing for httpx (and every client built on it, such as ``openai.OpenAI``)::

        http = httpx.Client(auth=SigV4Auth())
        openai.OpenAI(base_url=api_url + "/v1", api_key="unused", http_client=http)

    ``region`` and ``service`` default to what the URL says, then to the AWS chain's region and
    ``execute-api``. ``credentials`` (botocore credentials) or ``session`` (a botocore session)
    replace the default credential chain. A request without credentials raises CredentialsError.
    """

    requires_request_body = True  # the payload hash is part of the signature

    def __init__(self, region: str | None = None, service: str | None = None, *, credentials=None,
                 session=None):
        self._signer = _Signer(region, service, credentials, session)

    def auth_flow(self, request: httpx.Request):
        url = str(request.url)
        # The Authorization the caller set (openai sets "Bearer unused") is replaced, not signed.
        request.headers.pop("authorization", None)
        request.headers.update(self._signer.sign(request.method, url, request.headers, request.content))
        yield request


class RequestsSigV4Auth(_RequestsAuthBase):
    """SigV4 signing for ``requests``: ``requests.post(url, json=..., auth=RequestsSigV4Auth())``, or a
    Session whose ``auth`` it is (huggingface_hub's InferenceClient uses such a session)."""

    def __init__(self, region: str | None = None, service: str | None = None, *, credentials=None,
                 session=None):
        self._signer = _Signer(region, service, credentials, session)

    def __call__(self, request):
        body = request.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, (bytes, bytearray)):
            raise TypeError("RequestsSigV4Auth signs bytes or str bodies; read a streamed body into bytes first")
        request.headers.pop("Authorization", None)
        headers = dict(request.headers)
        headers.setdefault("host", _wire_host(request.url))
        request.headers.update(self._signer.sign(request.method, request.url, headers, bytes(body)))
        return request


def _wire_host(url: str) -> str:
    """The Host header requests will send: the netloc without userinfo, default ports dropped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


__all__ = ["SigV4Auth", "RequestsSigV4Auth", "infer_service_region", "DEFAULT_SERVICE"]
