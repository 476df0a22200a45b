#!/bin/sh
# Same contract as the AWS Lambda Python base image's /lambda-entrypoint.sh: the handler string is
# the one argument (the image CMD). Outside Lambda (no runtime API) the bundled Runtime Interface
# Emulator serves the invoke API on :8080; under Lambda or `sam local`, whose own emulator sets
# AWS_LAMBDA_RUNTIME_API, the runtime client talks to that directly.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
# awslambdaric imports the handler module by name; the task root must be on the path like on Lambda.
export PYTHONPATH="${LAMBDA_TASK_ROOT}${PYTHONPATH:+:$PYTHONPATH}"
cd "${LAMBDA_TASK_ROOT}"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie /usr/bin/python3 -m awslambdaric "$_HANDLER"
else
  exec /usr/bin/python3 -m awslambdaric "$_HANDLER"
fi
