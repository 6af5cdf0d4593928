"""The HTTP layer: flask-smorest blueprints that translate requests into serving calls."""
