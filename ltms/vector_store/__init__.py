"""Where the FAISS index lives (faiss_config) and the index itself (faiss_store)."""
