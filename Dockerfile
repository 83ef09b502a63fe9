# The rag API: `rag serve` on port 8000, data home on the /data volume.
# No Docker engine runs where this project is developed: tests/test_deploy.py checks this file and
# docker-compose.yml statically; build and run them where Docker is available.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAG_HOME=/data \
    RAG_API_HOST=0.0.0.0 \
    RAG_API_PORT=8000

# libgomp: FAISS and torch's OpenMP; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# As scripts/bootstrap does: the CPU build of torch first, pinned, so resolving the project never
# pulls a multi-GB CUDA build. Its own layer, so code changes do not reinstall it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

COPY pyproject.toml README* ./
COPY indexes ./indexes
COPY ingest ./ingest
COPY rag ./rag
COPY api ./api
COPY cli ./cli
RUN pip install --no-cache-dir ".[api,formats,postgres]" \
    && python -c "import torch, faiss, fastapi, cli.main, api.app; assert torch.__version__.startswith('2.13.0')"

RUN useradd --create-home --uid 10001 rag && mkdir -p /data /models && chown rag:rag /data
USER rag
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD curl -fsS "http://127.0.0.1:${RAG_API_PORT}/healthz" || exit 1

# Binding 0.0.0.0 requires API keys (--no-auth is refused beyond loopback):
#   docker compose run --rm api rag keys create --name me --scope write
CMD ["rag", "serve"]
