"""Ingestion: read corpora, chunk them, embed them and write them through `indexes`."""
