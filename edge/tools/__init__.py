"""Tooling around the runtime: evaluation, benchmarks and the demo.

Nothing in the runtime (the rest of `edge`, what `maskwatch run` and `maskwatch replay` load)
imports this package; its modules import the runtime, never the other way round
(tests/test_layout.py checks both). Each module runs as `python -m edge.tools.<module>`; the
Makefile's `demo`, `bench`, `bench-tflite` and `eval-tracking` targets are the usual way in.
"""
