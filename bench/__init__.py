"""ReasonRec Bench: one harness, one protocol, many reasoning methods for generative recommendation.

Python API (the CLI is a thin wrapper over these)::

    from bench import prepare, build_spec, run, reevaluate, load_suite, run_suite, build_site, get_method
"""
__version__ = "0.1.0"

_API = {
    "prepare": "bench.data", "SIDData": "bench.data",
    "build_spec": "bench.config", "resolve_spec": "bench.config", "run": "bench.runner", "reevaluate": "bench.reevaluate",
    "load_suite": "bench.config", "run_suite": "bench.suites",
    "build_site": "bench.leaderboard", "get_method": "bench.registry", "register": "bench.registry",
    "Method": "bench.method", "MethodInfo": "bench.method", "MethodConfig": "bench.method",
    "Recommendations": "bench.method", "RunSpec": "bench.specs", "RunResult": "bench.results",
    "evaluate": "bench.metrics", "FitContext": "bench.method", "TrainingDiverged": "bench.method",
}


def __getattr__(name):  # lazy, so `import bench` stays cheap
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


__all__ = list(_API)
