"""The `rag` command line: an entry point beside `api/`, built on `rag/`, never imported by it."""
