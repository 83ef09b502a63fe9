"""Evaluation against labelled questions in the standard formats (BEIR, TREC qrels, SQuAD)."""
