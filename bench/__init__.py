"""Benchmarks of ccarchive against its performance budgets, run as one command:
``python -m bench [--quick] [--json FILE]``.

The budgets (figures of a full run on the 2-core development machine, whose memory reads about
16 GB/s on one thread and 32 GB/s on two):

* statistics kernels (``series_stats``): at least 60 % of the memory read bandwidth, at least 10x
  numpy's nan-functions, and faster than bottleneck and numbagg computing the same results;
* data.json encoding (2-decimal samples): at least 300 MB/s of output on one core;
* gzip: a compressor much faster than zlib level 6, output at most 15 % larger;
* end to end, large jobs (shapes S1-S3): at least 10x a straightforward numpy + ``json`` +
  ``gzip`` implementation of the same rules, with the worker's peak memory bounded (streamed per
  metric, not the whole job in memory);
* small jobs through the whole pipeline (S4): at least 50 jobs/s; worker start-up (imports and
  cached JIT) under 2 s.

Each module ``bench.<name>`` has ``run(quick: bool) -> list[dict]``; a row has the keys ``group``,
``case``, ``impl``, ``seconds``, ``throughput`` (float), ``unit`` ("GB/s" or "MB/s") and optionally
``vs_baseline`` (speed-up over the straightforward implementation), ``vs_bandwidth`` (fraction of
memory read bandwidth), ``note``, and ``budget`` (text) with ``pass`` (bool) for a row that checks a
budget itself. ``bench.__main__`` prints all rows as one table followed by the budgets.

Modules: ``memory`` (read bandwidth, the yardstick), ``kernels`` (statistics kernels), ``encode``
(data.json encoding and gzip, when present).
"""
