"""Storage and search: SQL metadata, FAISS vectors and the encoder that fills them.

`indexes` is the bottom layer: it imports nothing from `ingest`, `rag` or `api`.
"""
