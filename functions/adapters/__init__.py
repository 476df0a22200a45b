"""Adapters: each turns one way of being called into calls on functions.service.ModelService.

    functions/handler.py            API Gateway proxy events (the Lambda entry point)
    functions/app.py                ASGI (FastAPI): local serving, /openapi.json, and the routes below
    functions/adapters/sagemaker.py the SageMaker container contract (/ping, /invocations) over the
                                    ASGI routes, with functions/batching.py's scheduler
    functions/serve.py              the GPU container's `serve` entry point

Adapters decode, call and encode; the tasks (functions/tasks/) do the work, below all of them.
"""
