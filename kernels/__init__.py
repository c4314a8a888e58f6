"""Numba kernels of ccarchive, installed as ``ccarchive.kernels``.

Pure functions over numpy arrays (no I/O, no Python objects), compiled with ``cache=True``.
Each has a plain-numpy twin in ``ccarchive.kernels.reference`` that the tests compare against.
"""
