"""Stage 3 (runtime), data: the image policy — how an image file becomes a network's input.

One rule for every command that feeds image files to a trained or fixed
network: `cnnc predict`, `cnnc apply`, `cnnc evaluate` (an image folder given
as its data), `cnnc viz --style activations` and the explorer page's
`--image`. `ImagePolicy` holds it; the commands and the runtime ask it.

- **Channels**: a network of fixed C converts the image (grey to RGB repeats
  the channel, RGB to grey is the luma, as `images(channels = C)` does); a
  symbolic C takes the image's own.
- **Size**: an image is resized (Pillow's bilinear filter, as `images(size =
  ...)` resizes) to `--resize HxW` when given, else to the size training
  resized its images to when the checkpoint recorded one (the meta key
  `image_size`, written for `images(size = ...)` and `segmentation(size = ...)`);
  otherwise it is taken as it is. A network of fixed H and W then refuses an
  image of another size with the one message `image 'F' is HxW (HxW), NET takes
  HxW` and the hint `add --resize HxW`; symbolic sizes are bound from the image.
- **Checked before work**: `check()` refuses up front a `--resize` that a
  network of fixed size cannot take, or whose float32 pixels exceed the image
  limit (`CNNC_MAX_IMAGE`); `input_shape(path)` says, from the file's header
  alone, what shape an image becomes (or refuses it), so a command checks every
  image before it decodes the first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ...compiler.symbolic import is_symbolic
from ...dsl import files
from ...dsl.source import CnncError
from .containers import Dataset, PathLike
from .images import convert_channels, image_limit, image_shape, read_image, resize


def size_text(hw: Sequence[Any]) -> str:
    """(300, 451) -> '300x451': height x width, the order of `--resize` and of every message."""
    return "x".join(str(d) for d in hw)


def parse_size(text: str, flag: str = "--resize") -> tuple[int, int]:
    """'300x451' -> (300, 451): height x width, each from 1 to 65535."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1 or max(size) > 65535:
        raise CnncError(f"{flag} {text}: expected HxW (height x width), two whole numbers from 1 to 65535, "
                        "e.g. 224x224")
    return size


def size_refusal(subject: str, have: Sequence[int], network: str, want: Sequence[Any]) -> CnncError:
    """The one message for images whose size a network of fixed size does not take; `subject` says
    what and ends in its verb ("image 'a.png' is", "data 'd' (test split): its images are")."""
    return CnncError(f"{subject} {size_text(have)} (HxW), {network} takes {size_text(want)}",
                     hint=f"add --resize {size_text(want)}")


@dataclass(frozen=True)
class ImagePolicy:
    """How image files become the input [C, H, W] of the network `network` (see the module docstring)."""

    network: str
    shape: tuple                              # the network's input [C, H, W]; entries may be symbolic
    resize: tuple[int, int] | None = None     # --resize HxW
    trained: tuple[int, int] | None = None    # the size training resized its images to (checkpoint meta)

    @property
    def size(self) -> tuple[int, int] | None:
        """What every image is resized to, or None: --resize, else the training's recorded size."""
        return self.resize or self.trained

    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) when the network takes one size only."""
        h, w = self.shape[1:]
        return None if is_symbolic(h) or is_symbolic(w) else (int(h), int(w))

    def for_shipped_photo(self) -> "ImagePolicy":
        """The policy for the shipped photograph (no image named): resized to a fixed-size network's
        size, since the user chose no image whose size could be wrong."""
        return self if self.size or self.fixed_size() is None else replace(self, resize=self.fixed_size())

    def channels_of(self, channels: int) -> int:
        c = self.shape[0]
        return channels if is_symbolic(c) else int(c)

    def check(self) -> None:
        """Refuse, before any image is read, a --resize the network cannot take or the limit forbids."""
        fixed = self.fixed_size()
        if self.resize is not None and fixed is not None and tuple(self.resize) != fixed:
            raise CnncError(f"--resize {size_text(self.resize)}: {self.network} takes {size_text(fixed)} (HxW)",
                            hint=f"give --resize {size_text(fixed)}")
        if self.size is not None:
            channels = 3 if is_symbolic(self.shape[0]) else int(self.shape[0])
            need = self.size[0] * self.size[1] * channels * 4
            if need > image_limit():
                what = f"--resize {size_text(self.size)}" if self.resize else \
                    f"the training's image size {size_text(self.size)}"
                raise CnncError(f"{what}: the resized image would take {files.size_text(need)} (float32), more "
                                f"than the limit of {files.size_text(image_limit())}",
                                hint="set CNNC_MAX_IMAGE (bytes) to raise the limit (docs/security.md)")

    def input_shape(self, header: Sequence[int], shown: str) -> tuple:
        """The shape [C, H, W] an image of `header` (C, H, W as its file declares) becomes, or the refusal."""
        c, h, w = header
        hw = tuple(self.size) if self.size is not None else (h, w)
        fixed = self.fixed_size()
        if fixed is not None and hw != fixed:
            raise size_refusal(f"image '{shown}' is", hw, self.network, fixed)
        channels = self.channels_of(c)
        if channels not in (1, 3):
            raise CnncError(f"image '{shown}' has {c} channel{'s' if c != 1 else ''}; {self.network} takes "
                            f"{channels}, and only grey (1) and RGB (3) images convert",
                            hint="give an array (.npy) of the channels the network takes")
        return (channels, *hw)

    def check_data(self, ds: Dataset) -> None:
        """A data set read from image files (`cnnc evaluate --data DIR`): its images, already resized
        to `size` when there is one, must have the network's fixed size."""
        fixed = self.fixed_size()
        for name, split in ds.splits():
            have = tuple(split.x.shape[2:])
            if fixed is not None and split.x.ndim == 4 and have != fixed:
                raise size_refusal(f"data '{files.describe_path(ds.name)}' ({name} split): its images are", have,
                                   self.network, fixed)

    def fit(self, image: np.ndarray, shown: str) -> np.ndarray:
        """A decoded image [C, H, W] as the network takes it."""
        shape = self.input_shape(image.shape, shown)
        image = convert_channels(image, shape[0])
        return resize(image, tuple(shape[1:])) if self.size is not None else image

    def read(self, path: PathLike) -> np.ndarray:
        """The image file as the network takes it: [C, H, W] float32 in [0, 1]."""
        shown = files.describe_path(path)
        self.input_shape(image_shape(path), shown)        # refused from the header, before decoding
        return self.fit(read_image(path), shown)
