"""Datasets: the embedded procedurally rendered default and the real zero-shot datasets."""
