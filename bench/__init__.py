"""Benchmarks of the pure engine (issue 3, section 6). See bench/README.md.

Speed goals are reported numbers (bench/results/engine.md), never test assertions.
"""
