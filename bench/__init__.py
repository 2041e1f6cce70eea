"""Benchmarks against the stack's own ceiling (issue #5): ``make bench`` = ``python -m bench``.

Every figure is measured next to a baseline built from the same parts (Flask under the same
gunicorn settings, SQLAlchemy, Huey, the same database) in the same run, on this machine, with
load from a separate process on 127.0.0.1. See docs/benchmarks.md for how to read the output.
Nothing here is imported by the engine or the tests.
"""
