"""Corpus preparation: one module per corpus (IEMOCAP) plus the synthetic IEMOCAP-format generator."""
