"""Retrieval: collections, ingestion, chunking, embeddings on pgvector, search."""
