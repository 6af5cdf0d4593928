"""Deployment state shared by every worker and replica: traffic policies and their audit log.

The serving core routes with an in-memory ``TrafficPolicy`` per model; this package keeps the
authoritative copy in the database (with a revision for optimistic concurrency), writes an
audit record for every accepted change, and keeps each process's copy current.
"""
