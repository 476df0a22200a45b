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
# Log request text (off by default: requests may carry personal data).
LOG_INPUTS = "MODELFN_LOG_INPUTS"
# ONNX Runtime intra-op threads (default: the CPUs this process may use).
THREADS = "MODELFN_THREADS"
# Large bundles are fetched at cold start from the registry instead of baked into the image.
REGISTRY_URI = "MODELFN_REGISTRY_URI"
FETCH_DIR = "MODELFN_FETCH_DIR"  # default /tmp/modelfn
# The GPU container server (functions/serve.py). The batch scheduler's limits: padded tokens per
# batch (rows x longest row), rows per batch, and requests admitted at once (more answer 429).
MAX_BATCH_TOKENS = "MODELFN_MAX_BATCH_TOKENS"
MAX_BATCH_REQUESTS = "MODELFN_MAX_BATCH_REQUESTS"
MAX_CONCURRENT_REQUESTS = "MODELFN_MAX_CONCURRENT_REQUESTS"
# ONNX Runtime execution provider: auto (TensorRT, then CUDA, then CPU: what the machine has), or
# tensorrt / cuda / cpu to force one. Lambda always runs the CPU provider and ignores it.
PROVIDER = "MODELFN_PROVIDER"
# Seconds a SIGTERM'd server waits for in-flight requests before it exits (SageMaker kills at 30 s).
DRAIN_TIMEOUT_S = "MODELFN_DRAIN_TIMEOUT_S"
# Build time (`modelfn build`): the Python of the image's base and the base image itself; the podman
# stand-in base runs Python 3.11 where the AWS base runs 3.12.
IMAGE_PYTHON = "MODELFN_IMAGE_PYTHON"
BASE_IMAGE = "MODELFN_BASE_IMAGE"
# Standard AWS / Lambda variables modelfn honours.
LAMBDA_TASK_ROOT = "LAMBDA_TASK_ROOT"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
# Standard SageMaker variable: the port the container serves on (default 8080).
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
