#!/bin/sh
# Installs what the test suites use beyond the Rust toolchain. Idempotent and quiet; run as root.
#   curl                    - fenced/tests/api.rs drives the API with it
#   openapi-spec-validator  - fenced/tests/api.rs validates fenced/openapi.json with it
set -eu

if ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi

if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator
fi
