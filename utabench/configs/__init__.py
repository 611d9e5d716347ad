"""Bundled run configurations (YAML)."""
