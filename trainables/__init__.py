"""The science of raysearch: what runs inside a trial's workers.

This package never imports :mod:`raysearch`; it runs and is tested without Ray Tune or MLflow.
"""
