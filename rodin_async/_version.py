"""The package's version: the one place it is written (pyproject reads it from here).

A constant, not ``importlib.metadata.version()``: importing that machinery cost every
process ~60 ms at start, a worker process's start included.
"""

__version__ = "0.1.0.dev0"
