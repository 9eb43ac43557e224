"""Measurements of nasd's own claims that run inside the package (``nasd bench ...``).

:mod:`nasd.bench.scheduling` compares placement policies on a simulated heterogeneous pool
(:mod:`nasd.bench.sim`) driven by the shipped benchmark tables (:mod:`nasd.bench.workload`).
"""
