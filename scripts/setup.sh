#!/usr/bin/env bash
# Creates .venv with the pinned stack and installs bitat_tf into it (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# larq-zoo (reference architectures for the deployment benchmark and its tests) pins an older stack in its
# metadata; without its dependencies it runs beside ours (../shared/design/toolchain-notes.md).
.venv/bin/python -m pip install -q --no-deps larq-zoo==2.4.0 zookeeper==1.4.0 typeguard==4.6.1
.venv/bin/python -m pip install -q --no-deps -e .
