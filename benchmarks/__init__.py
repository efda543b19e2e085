"""Benchmarks of geospatial_pipeline (run with ``make bench``)."""
