"""Model operations run by people (and later by admin jobs): optimize, import, report."""
