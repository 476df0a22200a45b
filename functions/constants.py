"""Every environment variable modelfn reads, in one place. Settings resolve as: explicit argument,
then environment variable, then default."""

# Where the model bundle lives inside the image (default: $LAMBDA_TASK_ROOT/model).
BUNDLE_DIR = "MODELFN_BUNDLE_DIR"
# The model's public name and registry version, set by the generated template.
MODEL_NAME = "MODELFN_MODEL_NAME"
MODEL_VERSION = "MODELFN_MODEL_VERSION"
# Request limits (models.yaml max_batch / max_tokens / truncate).
MAX_BATCH = "MODELFN_MAX_BATCH"
MAX_TOKENS = "MODELFN_MAX_TOKENS"
TRUNCATE = "MODELFN_TRUNCATE"
# Largest request body in bytes (default 6 MB, Lambda's synchronous payload limit); 413 past it.
MAX_BODY_BYTES = "MODELFN_MAX_BODY_BYTES"
# Log request text (off by default: requests may carry personal data).
LOG_INPUTS = "MODELFN_LOG_INPUTS"
# ONNX Runtime intra-op threads (default: the CPUs this process may use).
THREADS = "MODELFN_THREADS"
# Large bundles are fetched at cold start from the registry instead of baked into the image.
REGISTRY_URI = "MODELFN_REGISTRY_URI"
FETCH_DIR = "MODELFN_FETCH_DIR"  # default /tmp/modelfn
# Seconds a cold-start fetch waits on one registry socket read (default 5) before retrying once.
FETCH_TIMEOUT = "MODELFN_FETCH_TIMEOUT_S"
# Build time (`modelfn build`): the Python of the image's base and the base image itself; the podman
# stand-in base runs Python 3.11 where the AWS base runs 3.12.
IMAGE_PYTHON = "MODELFN_IMAGE_PYTHON"
BASE_IMAGE = "MODELFN_BASE_IMAGE"
# Standard AWS / Lambda variables modelfn honours.
LAMBDA_TASK_ROOT = "LAMBDA_TASK_ROOT"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
