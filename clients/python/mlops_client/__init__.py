"""Client for the mlops stack's HTTP APIs."""
