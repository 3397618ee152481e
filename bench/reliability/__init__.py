"""Reliability trials: crash, concurrency and load scripts and their shared kit."""
