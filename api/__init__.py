"""The HTTP API: FastAPI routers over one shared `Runtime`, versioned under `/v1`."""
