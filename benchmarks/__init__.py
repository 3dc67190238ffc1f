"""lumasched benchmarks: how close to the limits, how cheap per job, how flat in memory.

Run ``python -m benchmarks --help``; ``benchmarks/README.md`` explains each one.
"""
