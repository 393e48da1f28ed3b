"""Benchmarks, run as ``nst bench WHAT`` (see :mod:`benchmarks.bench`)."""
