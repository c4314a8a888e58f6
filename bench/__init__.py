"""Benchmarks of ccarchive against spec §8, run as one command: ``python -m bench [--quick] [--json FILE]``.

Each module ``bench.<name>`` has ``run(quick: bool) -> list[dict]``; a row has the keys ``group``,
``case``, ``impl``, ``seconds``, ``throughput`` (float), ``unit`` ("GB/s" or "MB/s") and optionally
``vs_baseline`` (speed-up over the straightforward implementation), ``vs_bandwidth`` (fraction of
memory read bandwidth), ``note``, and ``budget`` (text) with ``pass`` (bool) for a row that checks a
budget itself. ``bench.__main__`` prints all rows as one table followed by the budgets.

Modules: ``memory`` (read bandwidth, the yardstick), ``kernels`` (statistics kernels), ``encode``
(data.json encoding and gzip, when present).
"""
