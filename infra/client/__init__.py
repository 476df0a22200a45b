"""Calling a modelfn API from Python: a client, SigV4 auth for httpx and requests, the stack's
endpoints, and the errors. Imports httpx (and boto3 only when a stack or IAM auth needs it); never
torch or transformers.

    from infra.client import Client, SigV4Auth
"""

from .client import ApiKeyAuth, ChatStream, Client, RetryPolicy
from .endpoints import Endpoints, Route, default_stack_name, local_endpoints, stack_endpoints
from .errors import (APIError, AuthError, BadRequestError, CallTimeoutError, ClientError, CredentialsError,
                     NotFoundError, ServerError, StackError, ThrottledError, UnreachableError)
from .sigv4 import RequestsSigV4Auth, SigV4Auth, infer_service_region

__all__ = ["Client", "ChatStream", "ApiKeyAuth", "RetryPolicy", "SigV4Auth", "RequestsSigV4Auth",
           "infer_service_region", "Endpoints", "Route", "stack_endpoints", "local_endpoints", "default_stack_name",
           "ClientError", "CredentialsError", "StackError", "UnreachableError", "CallTimeoutError", "APIError",
           "BadRequestError", "AuthError", "NotFoundError", "ThrottledError", "ServerError"]
