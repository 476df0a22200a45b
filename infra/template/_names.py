"""Logical ids, routes and small CloudFormation helpers shared by the template builders."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from infra import defaults
from infra.spec import ModelSpec
from functions.tasks import EMBEDDINGS_ROUTE, get_task

FUNCTION_ALIAS = "live"
# The stream relay's code (functions/ + its bootstrap), one folder beside the models' build contexts.
RELAY_DIR = "_relay"
STAGE_NAME = defaults.STAGE_NAME
API_ID = "Api"


@dataclass(frozen=True)
class Deployment:
    """One model as it will be deployed: its spec, the registry version its alias named at build
    time, and whether the bundle is baked into the image or fetched at cold start."""

    spec: ModelSpec
    version: int
    bundle_bytes: int = 0
    fetch: bool = False
    context: str = ""  # DockerContext, relative to the template's folder
    runtime: object = None  # the bundle's manifest RuntimeConfig; None when only models.yaml is known
    # Stream generated answers (API Gateway STREAM mode + Lambda response streaming, for a gpu model
    # through its stream relay); off for `sam local`, which only invokes functions buffered.
    stream: bool = True
    memory_mb: int = 0  # the function's memory as `modelfn build` sized it (0: models.yaml's, or its default)
    # gpu text-generation: generators at once as models.yaml sets them or `modelfn build` derived them
    # from the GPU's memory (infra/build/gpu_memory.py); 0: the server's default
    max_concurrent_generations: int = 0
    gpu_sizing: str = ""  # gpu models: `modelfn build`'s GPU memory finding, one clause for its output

    @property
    def memory_size(self) -> int:
        """The function's MemorySize: as sized at build, else models.yaml's memory_mb (auto: the default)."""
        return self.memory_mb or self.spec.planned_memory_mb

    @property
    def logical_id(self) -> str:
        return camel(self.spec.name)

    @property
    def function_id(self) -> str:
        return f"{self.logical_id}Function"

    @property
    def docker_tag(self) -> str:
        return f"{self.spec.name}-v{self.version}"

    @property
    def is_gpu(self) -> bool:
        """Served by a SageMaker endpoint (_sagemaker.py) instead of a Lambda function."""
        return self.spec.target == "gpu"

    @property
    def openai_routes(self) -> tuple[str, ...]:
        """The OpenAI-shaped routes this model's bundle serves, as its task says."""
        return get_task(self.spec.task).openai_routes(self.runtime)

    @property
    def streams(self) -> bool:
        """Whether the function streams its answers (a generative task: SSE with ``stream: true``)."""
        return self.stream and not self.is_gpu and get_task(self.spec.task).streams

    @property
    def relays(self) -> bool:
        """Whether a gpu model's streaming routes go through a stream relay function (functions/relay.py):
        a generative task, streaming on (`modelfn build --no-stream` turns it off) and models.yaml's
        ``stream_relay`` not false."""
        return self.stream and self.is_gpu and self.spec.stream_relay and get_task(self.spec.task).streams

    @property
    def relay_id(self) -> str:
        return f"{self.logical_id}Relay"

    @property
    def relay_code(self) -> str:
        """The relay function's CodeUri: RELAY_DIR beside this model's build context."""
        return posixpath.join(posixpath.dirname(self.context), RELAY_DIR)

    @property
    def is_embedding(self) -> bool:
        return EMBEDDINGS_ROUTE in self.openai_routes


def camel(name: str) -> str:
    """``my-model-2`` -> ``MyModel2``: model names are URL-safe, logical ids alphanumeric."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-") if part)


def ref(name: str) -> dict:
    return {"Ref": name}


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def get_att(resource: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def if_(condition: str, yes, no) -> dict:
    return {"Fn::If": [condition, yes, no]}


NO_VALUE = {"Ref": "AWS::NoValue"}


def api_url(path: str = "") -> dict:
    return sub(f"https://${{{API_ID}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{STAGE_NAME}{path}")


def model_routes(deployment: Deployment) -> list[tuple[str, str]]:
    """(method, path) pairs a model's function always serves."""
    name = deployment.spec.name
    return [("post", f"/models/{name}/predict"), ("get", f"/models/{name}")]
