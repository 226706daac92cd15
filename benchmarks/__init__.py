"""gatekeeper's benchmarks: what each setup and each pipeline stage costs per request.

Scripts (run them from the repository root): ``hot_path.py`` (scenarios, own cost, per-stage
table), ``instructions.py`` (instructions per request under cachegrind, for any checkout),
``before_after.py`` (the same workload timed in two checkouts, interleaved). The other modules
are their parts; see ``benchmarks/README.md``.
"""
