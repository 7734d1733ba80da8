"""cnnc: a compiler, analyser, trainer and visualiser for convolutional networks.

The four stages are subpackages: `cnnc.dsl` (grammar, parser, AST),
`cnnc.compiler` (elaboration, op specs, analyses, passes), `cnnc.runtime`
(NumPy kernels, execution plan, training) and `cnnc.viz` (diagrams). The
Python API (app/api.py, docs/python.md) is here: `cnnc.compile`,
`cnnc.train`, `cnnc.predict`, `cnnc.StopTraining`; they are imported on first
use, so `import cnnc` stays cheap.
"""
__version__ = "0.1.0"

API = ("compile", "train", "predict", "Network", "Run", "StopTraining", "LintWarning", "CnncError")


def __getattr__(name: str):
    if name in API:
        from . import api
        from .dsl.source import CnncError
        return CnncError if name == "CnncError" else getattr(api, name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
