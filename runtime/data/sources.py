"""Stage 3 (runtime), data: where a data set comes from — the one place a source is chosen.

`load_dataset(source, **options)` reads "mnist10k", a standard set's name
(standard.py), a synthetic set's name (synthetic.py), an .npz file or an IDX
folder (array_files.py), a segmentation folder (segmentation.py) or an image
folder (image_folders.py), and refuses options the source does not take.
`DATA_LOADERS` reads each entry of the train vocabulary's `data` family
(compiler/train_vocab.py `DATA`) with exactly that entry's options, given the
network's shapes (a synthetic set fits them; a segmentation folder's masks are
checked against the output's classes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ...dsl import files
from ...dsl.source import CnncError
from . import standard
from .array_files import is_idx_folder, load_idx_folder, load_npz
from .containers import Dataset, PathLike
from .image_folders import load_image_folder
from .segmentation import is_segmentation_folder, load_segmentation_folder
from .synthetic import FITTED, SYNTHETIC, load_synthetic
from .targets import NetworkShapes


_IMAGE_FOLDER_OPTIONS = ("size", "channels")


def _refuse_options(text: str, kind: str, options: dict[str, Any], allowed: Sequence[str] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if not unknown:
        return
    if allowed:
        raise CnncError(f"data source '{text}' ({kind}) takes only {', '.join(allowed)}, got {unknown}")
    raise CnncError(f"data source '{text}'{f' ({kind})' if kind else ''} takes no options, got {unknown}")


def load_dataset(source: PathLike, resize: tuple[int, int] | None = None, **options: Any) -> Dataset:
    """Load `source`: "mnist10k", a synthetic set name (options go to it), an .npz file,
    an IDX folder, or an image folder with one sub-folder per class (options `size`
    and `channels`, see `load_image_folder`). Options a source does not take are refused;
    `resize` is the size for a folder of images whose options name none (the image policy)."""
    text = str(source)
    if text in SYNTHETIC or (text in FITTED and options):
        return load_synthetic(text, options)
    if text == "mnist10k":
        _refuse_options(text, "", options)
        return standard.load_mnist10k()
    if text in standard.STANDARD and not Path(text).exists():  # a folder of that name wins
        _refuse_options(text, "", options)
        return standard.load_standard(text)
    path = Path(source)
    if not path.exists():
        raise CnncError(f"data source '{files.describe_path(text)}' does not exist",
                        hint="give a path to an .npz file, an IDX folder or an image folder, "
                             "or one of: mnist10k, " + ", ".join([*standard.STANDARD, *SYNTHETIC]))
    if resize is not None and path.is_dir() and not is_idx_folder(path) and options.get("size") is None:
        options = {**options, "size": resize}
    if is_segmentation_folder(path):
        _refuse_options(text, "a segmentation folder", options, _IMAGE_FOLDER_OPTIONS)
        return load_segmentation_folder(path, **options)
    if path.is_dir() and is_idx_folder(path):
        _refuse_options(text, "an IDX folder", options)
        return load_idx_folder(path)
    if path.is_dir():
        _refuse_options(text, "an image folder", options, _IMAGE_FOLDER_OPTIONS)
        return load_image_folder(path, **options)
    _refuse_options(text, "an .npz archive", options)
    return load_npz(path)


# One loader per entry of the vocabulary's DATA family; each takes exactly the entry's options
# (the family's common options, val, test and limit, are applied by pipeline.py to every data set).
def _load_mnist10k(shapes: NetworkShapes) -> Dataset:
    return load_dataset("mnist10k")


def _load_path(shapes: NetworkShapes, path: str) -> Dataset:
    return _path_source(shapes, path)


def _path_source(shapes: NetworkShapes, path: str, resize: tuple[int, int] | None = None) -> Dataset:
    """`data = "SOURCE"` and `--data SOURCE`: `synthetic`, or a synthetic set's own name
    (`synthetic_classes`, ...), is generated to fit the network, as `data = synthetic(kind = ...)` is;
    anything else is read by `load_dataset` (a folder of images at `resize`, the image policy)."""
    if path == "synthetic":
        return _load_synthetic(shapes)
    if path in SYNTHETIC:
        return _load_synthetic(shapes, kind=path.removeprefix("synthetic_"))
    return load_dataset(path, resize=resize)


def _load_npz(shapes: NetworkShapes, path: str) -> Dataset:
    if Path(path).is_dir():
        raise CnncError(f"data = npz(\"{files.describe_path(path)}\"): that is a folder, not an .npz file",
                        hint="for a folder of images write images(\"…\"), for IDX files idx(\"…\")")
    return load_dataset(path)


def _load_idx(shapes: NetworkShapes, path: str) -> Dataset:
    if Path(path).exists() and not is_idx_folder(path):
        raise CnncError(f"data = idx(\"{files.describe_path(path)}\"): not a folder of MNIST IDX files",
                        hint="it needs train-images-idx3-ubyte and train-labels-idx1-ubyte (.gz allowed)")
    return load_dataset(path)


def _load_images(shapes: NetworkShapes, path: str, size: Any = None, channels: int | None = None) -> Dataset:
    if is_segmentation_folder(path):
        raise CnncError(f"data = images(\"{files.describe_path(path)}\"): that folder holds images and masks "
                        "(a segmentation data set), not one sub-folder per class",
                        hint=f"write data = segmentation(\"{files.describe_path(path)}\")")
    given = {k: v for k, v in (("size", size), ("channels", channels)) if v is not None}
    return load_dataset(path, **given)


def _load_synthetic(shapes: NetworkShapes, n: int | None = None, classes: int | None = None, shape: Any = None,
                    kind: str | None = None, seed: int = 0, noise: float | None = None) -> Dataset:
    out = shapes.output
    in_shape = tuple(shape) if shape is not None else shapes.input
    opts: dict[str, Any] = {"seed": seed}
    if noise is not None:
        opts["noise"] = noise
    if n is not None:
        opts["n_train"], opts["n_test"] = n, max(n // 4, 1)
    if len(shapes.outputs) > 1:
        if kind is not None:
            raise CnncError(f"data = synthetic(kind = {kind}): a network with several outputs gets a target per "
                            "output, by the kind of its loss", hint="drop kind")
        return load_dataset("synthetic_outputs", shape=in_shape, num_classes=classes,
                            outputs={o: (shapes.kinds.get(o, "class"), shp) for o, shp in shapes.outputs.items()},
                            **opts)
    kind = kind or ("segmentation" if len(out) == 3 else "classes")
    if kind == "regression" and (len(in_shape) == 3 or len(out) > 1):   # images in, or an image out
        target = (classes,) if classes is not None else out
        return load_dataset("synthetic_image_regression", shape=in_shape, target_shape=target, **opts)
    if kind == "regression":
        opts["features"] = in_shape[0]
        opts["targets"] = classes if classes is not None else out[0]
    else:
        opts["shape"] = in_shape
        opts["num_classes"] = classes if classes is not None else out[0]
    return load_dataset(f"synthetic_{kind}", **opts)


def _load_segmentation(shapes: NetworkShapes, path: str, size: Any = None, channels: int | None = None) -> Dataset:
    """The train vocabulary's `segmentation("dir", size, channels)`: the folder, with its masks checked
    against the network's class count (its dense output's channels) file by file."""
    out = shapes.output
    classes = out[0] if len(out) == 3 and isinstance(out[0], int) else None
    return load_segmentation_folder(path, size=size, channels=channels, classes=classes)


def load_source(name: str, shapes: NetworkShapes, options: dict[str, Any],
                image_size: tuple[int, int] | None = None) -> Dataset:
    """The data set of the vocabulary's entry `name` with its options; `image_size` (the image policy's
    size, image_policy.py) resizes the images of a folder of image files that names no size of its own."""
    if image_size is not None and name in ("images", "segmentation") and options.get("size") is None:
        options = {**options, "size": image_size}
    elif name == "path":
        return _path_source(shapes, options["path"], image_size)
    return DATA_LOADERS[name](shapes, **options)


DATA_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist10k": _load_mnist10k, "path": _load_path, "npz": _load_npz, "idx": _load_idx,
    "images": _load_images, "synthetic": _load_synthetic, "segmentation": _load_segmentation,
}


def _standard_loader(name: str) -> Callable[..., Dataset]:
    def load(shapes: NetworkShapes) -> Dataset:
        return standard.load_standard(name)
    return load


# The standard data sets by name (mnist, cifar10, ...): downloaded on first use.
DATA_LOADERS.update({name: _standard_loader(name) for name in standard.STANDARD})
