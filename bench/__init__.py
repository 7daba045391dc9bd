"""Benchmarks: each process of the project against its own baseline, in one run.

`make bench` runs them all (`python -m bench`).
"""
