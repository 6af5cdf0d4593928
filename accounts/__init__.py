"""Identities and API management: users, roles, API keys, tokens, quotas.

This is the web product's state, kept apart from ``serving/`` (which knows nothing of who
calls it). Everything here lives in the database so that every worker and every replica
sharing it agrees.
"""
