"""Retrieval: chunking long texts, the keyword leg's query terms, and fusing the keyword and vector legs."""
