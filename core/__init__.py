"""Shared core: configuration, errors, the click event, the lake layout, the model registry.

Every other package imports from here; this package imports none of them.
"""
