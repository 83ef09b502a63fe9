"""Answering: retrieval over `indexes`, readers and generators, the CLI and evaluation."""
