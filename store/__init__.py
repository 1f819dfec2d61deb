"""The one layer that touches disk: SQLite, the FAISS index and tensor blobs."""
