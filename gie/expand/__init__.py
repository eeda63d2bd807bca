"""Metapath behaviour expansion, Faiss indexes, and the published bundle."""
