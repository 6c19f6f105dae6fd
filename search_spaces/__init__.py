"""YAML experiment configs and search spaces shipped with raysearch."""
