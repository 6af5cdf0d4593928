"""Batch jobs: stored in the shared database, run in the background by every process."""
