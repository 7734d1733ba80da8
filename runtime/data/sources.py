"""Stage 3 (runtime), data: where a data set comes from — the one place a source is chosen.

`load_dataset(source, **options)` reads "mnist10k", a standard set's name
(standard.py), a synthetic set's name (synthetic.py), an .npz file or an IDX
folder (array_files.py), a segmentation folder (segmentation.py) or an image
folder (image_folders.py), and refuses options the source does not take.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...dsl import files
from ...dsl.source import CnncError
from . import standard
from .array_files import is_idx_folder, load_idx_folder, load_npz
from .containers import Dataset, PathLike
from .image_folders import load_image_folder
from .segmentation import is_segmentation_folder, load_segmentation_folder
from .synthetic import SYNTHETIC, load_synthetic


_IMAGE_FOLDER_OPTIONS = ("size", "channels")


def _refuse_options(text: str, kind: str, options: dict[str, Any], allowed: Sequence[str] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if not unknown:
        return
    if allowed:
        raise CnncError(f"data source '{text}' ({kind}) takes only {', '.join(allowed)}, got {unknown}")
    raise CnncError(f"data source '{text}'{f' ({kind})' if kind else ''} takes no options, got {unknown}")


def load_dataset(source: PathLike, **options: Any) -> Dataset:
    """Load `source`: "mnist10k", a synthetic set name (options go to it), an .npz file,
    an IDX folder, or an image folder with one sub-folder per class (options `size`
    and `channels`, see `load_image_folder`). Options a source does not take are refused."""
    text = str(source)
    if text in SYNTHETIC:
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
