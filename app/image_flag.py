"""Command line: the `--resize HxW` flag, one definition for every command that feeds images to a network.

`cnnc predict`, `apply`, `evaluate`, `viz` (activations, html) and `view`
take it; the rule it sets is the runtime's image policy
(runtime/data/image_policy.py): every image is resized to H x W, by default
to the size training resized its images to when the checkpoint recorded one,
and an image a network of fixed size cannot take is refused with one message.
"""
from __future__ import annotations

import argparse

from .runtime.data.image_policy import parse_size

HELP = ("resize every image to H x W (height x width, Pillow's bilinear filter) before the network; default: "
        "the size training resized its images to, when the checkpoint recorded one; docs/data.md")


def add_resize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", metavar="HxW", help=HELP)


def resize_of(args: argparse.Namespace) -> tuple[int, int] | None:
    """--resize as (height, width), checked; None when not given."""
    text = getattr(args, "resize", None)
    return None if text is None else parse_size(text)
