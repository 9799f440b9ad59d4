#!/usr/bin/env bash
# Creates bench/.litellm-venv with LiteLLM's proxy, pinned to the version the design
# numbers were measured with. Kept apart from the project venv: LiteLLM pins its own
# versions of fastapi, pydantic, httpx and openai.
set -euo pipefail

LITELLM_VERSION="${LITELLM_VERSION:-1.106.2}"
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.litellm-venv"
PYTHON="${PYTHON:-python3}"
# Loopback-only machines: otherwise importing litellm retries a download of its price map.
export LITELLM_LOCAL_MODEL_COST_MAP=True

installed_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))" 2>/dev/null
}

if [[ -x "$VENV/bin/litellm" && "$(installed_version)" == "$LITELLM_VERSION" ]]; then
    echo "litellm $LITELLM_VERSION already installed in $VENV"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "litellm[proxy]==${LITELLM_VERSION}"
"$VENV/bin/python" -c "import litellm.proxy.proxy_server"  # fails on a broken install
echo "litellm $(installed_version) installed in $VENV"
