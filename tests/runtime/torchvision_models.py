"""torchvision for the tests (its models as independent references), or None where it is absent.

The torchvision wheels of the package index are CUDA builds: beside the CPU
torch of the test extra their C++ ops library (`torchvision/_C.so`) cannot
load (it needs CUDA's libraries), torchvision then carries on without its ops,
but version 0.28's `_meta_registrations` registers a fake kernel for
`torchvision::nms` without checking, so `import torchvision` fails with
"operator torchvision::nms does not exist". The models need none of those ops
(nms and qnms are detection post-processing): declaring the two schemas before
the import lets it finish; calling them would still fail.
"""
from __future__ import annotations

from functools import cache
from types import ModuleType


@cache
def import_torchvision() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        import torchvision
        return torchvision
    except ImportError:
        return None
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    library = torch.library.Library("torchvision", "DEF")   # kept alive by the cache with the module
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import sys
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]   # the failed import left half-initialised modules behind
    import torchvision
    torchvision._cnnc_test_library = library
    return torchvision
