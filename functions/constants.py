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
# Image inputs: the most compressed bytes and decoded pixels one image may have (checked before decoding).
MAX_IMAGE_BYTES = "MODELFN_MAX_IMAGE_BYTES"
MAX_IMAGE_PIXELS = "MODELFN_MAX_IMAGE_PIXELS"
# Audio inputs: the most compressed bytes and seconds one recording may have (checked before decoding).
MAX_AUDIO_BYTES = "MODELFN_MAX_AUDIO_BYTES"
MAX_AUDIO_SECONDS = "MODELFN_MAX_AUDIO_SECONDS"
# Largest request body in bytes (default 6 MB, Lambda's synchronous payload limit); 413 past it.
MAX_BODY_BYTES = "MODELFN_MAX_BODY_BYTES"
# Log request text (off by default: requests may carry personal data).
LOG_INPUTS = "MODELFN_LOG_INPUTS"
# Per-request time budget in milliseconds (functions/deadline.py). Default: the Lambda function's remaining
# time minus a margin; set, it caps that (and bounds adapters that have no Lambda context).
TIME_BUDGET_MS = "MODELFN_TIME_BUDGET_MS"
# ONNX Runtime intra-op threads (default: the CPUs this process may use).
THREADS = "MODELFN_THREADS"
# Whether those threads spin while they wait for work: auto (default: on when every thread has a
# whole CPU, functions/settings.spinning_pays), on, or off (a host shared with other busy processes).
SPINNING = "MODELFN_SPINNING"
# Lambda response streaming (text-generation functions): "true" runs functions.response_stream as the
# runtime loop (API Gateway REST integration in STREAM mode); otherwise the managed, buffered runtime.
RESPONSE_STREAMING = "MODELFN_RESPONSE_STREAMING"
# The GPU stream relay (functions/relay.py): the SageMaker endpoint it streams from, and the inference
# component to name (scale-to-zero endpoints only; set by the template).
ENDPOINT_NAME = "MODELFN_ENDPOINT_NAME"
INFERENCE_COMPONENT = "MODELFN_INFERENCE_COMPONENT"
# Large bundles are fetched at cold start from the registry instead of baked into the image.
REGISTRY_URI = "MODELFN_REGISTRY_URI"
FETCH_DIR = "MODELFN_FETCH_DIR"  # default /tmp/modelfn
# The GPU container server (functions/serve.py). The batch scheduler's limits: padded tokens per
# batch (rows x longest row), rows per batch, and requests admitted at once (more answer 429).
MAX_BATCH_TOKENS = "MODELFN_MAX_BATCH_TOKENS"
MAX_BATCH_REQUESTS = "MODELFN_MAX_BATCH_REQUESTS"
MAX_CONCURRENT_REQUESTS = "MODELFN_MAX_CONCURRENT_REQUESTS"
# Text-generation models on the GPU server: generators decoding at once, each with its own KV cache
# (functions/generation/scheduler.py). Default: 1 on the CPU provider, 8 on CUDA.
MAX_CONCURRENT_GENERATIONS = "MODELFN_MAX_CONCURRENT_GENERATIONS"
# ONNX Runtime execution provider: auto (TensorRT, then CUDA, then CPU: what the machine has), or
# tensorrt / cuda / cpu to force one. Lambda always runs the CPU provider and ignores it.
PROVIDER = "MODELFN_PROVIDER"
# Seconds a SIGTERM'd server waits for in-flight requests before it exits (SageMaker kills at 30 s).
DRAIN_TIMEOUT_S = "MODELFN_DRAIN_TIMEOUT_S"
# Seconds a cold-start fetch waits on one registry socket read (default 5) before retrying once.
FETCH_TIMEOUT = "MODELFN_FETCH_TIMEOUT_S"
# Build time (`modelfn build`): the Python of the image's base and the base image itself; the podman
# stand-in base runs Python 3.11 where the AWS base runs 3.12.
IMAGE_PYTHON = "MODELFN_IMAGE_PYTHON"
BASE_IMAGE = "MODELFN_BASE_IMAGE"
# Build time, gpu models: the CUDA base of their images, and the ONNX Runtime distribution they
# install ("onnxruntime" over the CPU stand-in of the CUDA base, scripts/standin-base/cuda.sh).
GPU_BASE_IMAGE = "MODELFN_GPU_BASE_IMAGE"
GPU_RUNTIME = "MODELFN_GPU_RUNTIME"
# Observability: Powertools' own names, so a function configured for Powertools is configured for
# modelfn's log/EMF line and X-Ray tracing alike.
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"  # default modelfn
SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"  # default modelfn
LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"  # then LOG_LEVEL; default INFO
GENERIC_LOG_LEVEL = "LOG_LEVEL"
TRACE_DISABLED = "POWERTOOLS_TRACE_DISABLED"  # tracing is on only when this is set false
# Standard AWS / Lambda variables modelfn honours.
LAMBDA_TASK_ROOT = "LAMBDA_TASK_ROOT"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
# Standard SageMaker variable: the port the container serves on (default 8080).
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
