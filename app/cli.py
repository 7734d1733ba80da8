"""The `cnnc` command line: check, compile, run, search, predict, evaluate, apply, viz, export, import.

Exit status 0 on success, 1 on a user error (printed as a located
diagnostic, never a traceback), 2 on bad command-line usage (argparse).
Set CNNC_DEBUG=1 to see the traceback of an internal error.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from .dsl.source import CnncError, Diagnostic
from .image_flag import add_resize
from .runtime.kernels.sets import SETS as KERNEL_SETS
from .runtime.data.standard import STANDARD
from .runtime.train.engines import ENGINES
from .viz.images import MAPPINGS
from .viz.output import STYLES

EXAMPLES = """examples:
  cnnc check examples/resnet18.cnn
  cnnc compile examples/unet.cnn --input x=1x576x576
  cnnc compile examples/resnet50.cnn --format json > resnet50.json
  cnnc run examples/lenet5.cnn --epochs 2 --out runs/lenet
  cnnc search examples/lenet5.cnn --grid lr=0.01,0.003 --workers 2
  cnnc viz examples/resnet18.cnn -o resnet18.svg
  cnnc export examples/lenet5.cnn --to torch -o lenet5.py
  cnnc import resnet18.onnx -o resnet18.cnn
"""


def _color(stream) -> bool:
    return stream.isatty() and os.environ.get("NO_COLOR") is None and os.environ.get("TERM") != "dumb"


def print_diagnostic(d: Diagnostic) -> None:
    print(d.render(_color(sys.stderr)), file=sys.stderr)


# ------------------------------------------------------------------ parsers
def _common_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .cnn file")
    p.add_argument("--network", metavar="NAME", help="which network of the file (default: its only one)")
    p.add_argument("--input", metavar="NAME=CxHxW", action="append", default=[],
                   help="bind an input's size, e.g. x=3x224x224 (repeatable)")
    p.add_argument("--set", metavar="NAME=VALUE", action="append", default=[], dest="params",
                   help="set a network parameter, e.g. classes=100 (repeatable)")
    p.add_argument("--allow", metavar="LINT", action="append", default=[],
                   help="silence a warning by its name, e.g. --allow dropped-pixels, or --allow all")


def _ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", nargs=2, metavar=("FILE", "CHECKPOINT"), action="append", default=[],
                   help="an ensemble member of another network: its .cnn file and checkpoint (repeatable)")
    p.add_argument("--combine", choices=("mean", "vote"), help="how members combine: mean of probabilities "
                                                               "(default) or majority vote")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnc", description="Compile, analyse, train and draw convolutional networks written in .cnn files.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnc {__import__('cnnc').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="parse and check a file; print warnings",
                       description="Parse a .cnn file, check every shape, print warnings. Exit 1 on an error.")
    _common_compile_args(p)

    p = sub.add_parser("compile", help="print the per-layer table (or JSON)",
                       description="Check a network and print per-layer output shape, parameters, MACs and "
                                   "receptive field, with totals.")
    _common_compile_args(p)
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.add_argument("--expand", action="store_true", help="list every layer of repeated blocks")
    p.add_argument("--wide", action="store_true", help="full layer names, ops and shapes (the table fits the "
                                                       "terminal's width otherwise: COLUMNS or the terminal's)")
    p.add_argument("--depth", type=int, metavar="N", help="collapse blocks nested deeper than N into one row")
    p.add_argument("--fuse", action="store_true", help="fuse conv-batchnorm-relu groups and list them")
    p.add_argument("--emit", choices=("numpy",), help="emit the network as a standalone NumPy module")
    p.add_argument("-o", "--output", metavar="FILE", help="where --emit writes the module")
    p.add_argument("--checkpoint", metavar="PATH", help="weights for --emit (a checkpoint written by cnnc run; "
                                                        "default: the seeded initial weights)")
    p.add_argument("--raw", action="store_true", help="with --checkpoint: leave out the training's preprocessing "
                                                      "(the module then takes preprocessed inputs)")

    p = sub.add_parser("run", help="train (and evaluate) a network",
                       description="Train a network with its `train` section; flags override its keys.")
    _common_compile_args(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--data", metavar="PATH", help=f"mnist10k, {', '.join(STANDARD)}; a .npz file, an MNIST IDX "
                                                   "folder, an image folder or a segmentation folder (images/ + "
                                                   "masks/); or synthetic (generated to fit the network)")
    p.add_argument("--out", metavar="DIR", help="where checkpoints and metrics.jsonl go (default runs/NETWORK)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (default: refuse)")
    p.add_argument("--eval", metavar="CHECKPOINT", help="only evaluate this checkpoint on the test split")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training samples")
    p.add_argument("--threads", type=int, metavar="N", help="worker threads (default: the number of cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no line per epoch: only warnings, "
                                                        "stops and the final figures")
    p.add_argument("--tensorboard", metavar="DIR", help="also write the metrics as TensorBoard event files into DIR "
                                                        "(k-fold: DIR/fold-K); pip install 'cnnc[tensorboard]'")
    p.add_argument("--watch-every", type=int, metavar="K", help="also record the per-layer statistics every K "
                                                                "steps (a step record in metrics.jsonl; default: "
                                                                "per epoch; docs/diagnostics.md)")
    p.add_argument("--engine", choices=ENGINES, default="numpy",
                   help="what computes: the embedded numpy runtime (default) or PyTorch (pip install 'cnnc[torch]')")
    p.add_argument("--kernels", choices=KERNEL_SETS,
                   help="the numpy engine's kernels: numpy, or fast (compiled, pip install 'cnnc[fast]'); "
                        "default: $CNNC_KERNELS, else fast where Numba is installed")
    p.add_argument("--device", metavar="DEVICE", help="with --engine torch: cpu (default), cuda or mps")
    p.add_argument("--nproc", type=int, metavar="N", help="with --engine torch: train in N processes on this "
                                                          "machine (DistributedDataParallel)")
    p.add_argument("--kfold", type=int, metavar="K", help="k-fold cross-validation: K models in OUT/fold-1..K and "
                                                          "their mean ± std (train key kfold)")
    p.add_argument("--bootstrap", action="store_true", default=None,
                   help="train on a bootstrap resample of the training split (bagging; train key bootstrap)")
    p.add_argument("--train", metavar="KEY=VALUE", action="append", default=[],
                   help="set any train key, e.g. --train optimizer=adam (repeatable)")

    p = sub.add_parser("search", help="hyper-parameter search: a grid or random trials, in parallel",
                       description="Train one model per trial of a grid (or N random draws) over network parameters "
                                   "and train keys, each in its own run directory; print them ranked and the best "
                                   "as the command that reproduces it.",
                       epilog="distributions for --random: uniform(a, b), loguniform(a, b), randint(a, b), "
                              "choice(v1, v2, ...); docs/model_selection.md")
    _common_compile_args(p)
    p.add_argument("--grid", metavar="NAME=V1,V2", action="append", default=[],
                   help="an axis: a network parameter or a train key and its values, or with --random a "
                        "distribution such as lr=loguniform(1e-4, 1e-1) (repeatable)")
    p.add_argument("--random", type=int, metavar="N", help="N random trials instead of the whole grid")
    p.add_argument("--draw-seed", type=int, default=0, metavar="S", help="seed of the random draws (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="trials run at once, each in its own "
                                                                       "process (default 1)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the trials on this Dask cluster "
                                                                  "(pip install 'cnnc[dask]')")
    p.add_argument("--metric", help="rank by val_accuracy, val_loss, train_accuracy, train_loss, test_accuracy "
                                    "or test_loss (default: the first of these, validation first, that every "
                                    "trial reports)")
    p.add_argument("--halving", type=int, metavar="ETA", help="successive halving: only the best 1/ETA of the "
                                                              "trials train on to ETA times more epochs")
    p.add_argument("--train", metavar="KEY=VALUE", action="append", default=[],
                   help="set a train key for every trial (repeatable)")
    p.add_argument("--data", metavar="PATH", help="the data for every trial (as cnnc run --data)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training samples")
    p.add_argument("--threads", type=int, metavar="N", help="threads per trial (default 1)")
    p.add_argument("--out", metavar="DIR", help="where trials and results.jsonl go (default runs/search-FILE)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write each trial's metrics as TensorBoard event files "
                                                        "into DIR/TRIAL; pip install 'cnnc[tensorboard]'")
    p.add_argument("--resume", action="store_true", help="run only the trials results.jsonl lacks")
    p.add_argument("--overwrite", action="store_true", help="replace the search already in OUT")

    p = sub.add_parser("predict", help="predict classes for inputs with a trained checkpoint",
                       description="Run a trained network on inputs and print its predictions.")
    _common_compile_args(p)
    p.add_argument("checkpoint", help="a checkpoint written by cnnc run (.npz)")
    p.add_argument("inputs", nargs="*", help="image files (.png/.pgm/.ppm) or a .npz/.npy array; "
                                             "default: the test split of the train data")
    p.add_argument("--top", type=int, default=1, metavar="K", help="print the K most likely classes")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="at most N rows of the test split")
    p.add_argument("-o", "--output", metavar="DIR", help="for a segmentation network: write each predicted mask "
                                                        "as a palette PNG into DIR")
    p.add_argument("--overlay", action="store_true", help="with -o: also write each input blended with its "
                                                            "coloured mask (overlay_NNNN.png)")
    add_resize(p)

    _ensemble_args(p)
    p.add_argument("--ensemble", metavar="CHECKPOINT", action="append", default=[],
                   help="another checkpoint of this network: predict with the ensemble (repeatable)")

    p = sub.add_parser("evaluate", help="score checkpoints on the test split, alone and as an ensemble",
                       description="Score each checkpoint on the test split (else validation) and, given several, "
                                   "their ensemble beside them.")
    _common_compile_args(p)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints of this file's network")
    _ensemble_args(p)
    p.add_argument("--data", metavar="PATH", help="evaluate on this data instead of the train section's")
    add_resize(p)

    p = sub.add_parser("make-shapes", help="write a synthetic segmentation data set (shapes and their masks)",
                       description="Write images of discs, squares and triangles on textured backgrounds with "
                                   "their masks, in the segmentation folder layout of docs/data.md.")
    p.add_argument("folder", metavar="DIR", help="the folder to create (must not exist, or be empty)")
    p.add_argument("--n", type=int, default=500, metavar="N", help="training images (default 500)")
    p.add_argument("--test", type=int, metavar="N", help="test images (default N/4)")
    p.add_argument("--size", type=int, default=32, metavar="S", help="images are S x S pixels (default 32)")
    p.add_argument("--channels", type=int, default=3, metavar="C", help="1 (grey) or 3 (RGB, default)")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (default 0)")

    p = sub.add_parser("apply", help="run a network on images and write its output as images",
                       description="Run a network (fixed filters, or trained weights with --checkpoint) on "
                                   "images and write a tensor as PNG images: one per channel, or one grid.",
                       epilog="mappings: " + "; ".join(f"{k}: {v}" for k, v in MAPPINGS.items()))
    _common_compile_args(p)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (any format Pillow reads); default: "
                                                             "a shipped photograph (grey or RGB, as the input)")
    p.add_argument("-o", "--output", metavar="OUT.png", help="where the picture goes (default NETWORK.png); "
                                                              "several pictures add -IMAGE, -TENSOR, -cK")
    p.add_argument("--checkpoint", metavar="PATH", help="trained weights (a checkpoint written by cnnc run); "
                                                        "without it every weight must be fixed in the file")
    p.add_argument("--layer", metavar="NAME", help="write this layer's output instead of the network's")
    p.add_argument("--map", choices=tuple(MAPPINGS), default="minmax",
                   help="display mapping per channel: minmax (default), abs or clip")
    p.add_argument("--grid", action="store_true", help="one grid image of all channels instead of one per channel")
    add_resize(p)

    p = sub.add_parser("viz", help="draw a network (.svg, .png, .pdf, .dot)",
                       description="Draw a network's graph, an architecture figure, receptive fields, or "
                                   "training curves.")
    _common_compile_args(p)
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="output file; the extension picks "
                                                                          "the format")
    p.add_argument("--style", choices=STYLES, default="graph",
                   help="graph (Graphviz, default), figure (feature-map boxes), rf (receptive-field growth), "
                        "rf-grid (one unit's field over the input), curves, confusion and diagnostics (per-layer heat "
                        "strips and histograms) from --metrics, activations "
                        "(every layer's feature maps for --image, .png), kernels (convolution weights, .png), html "
                        "(the explorer: one page to fold, click and search; with --image its feature maps)")
    p.add_argument("--depth", type=int, metavar="N", help="collapse blocks nested deeper than N (html: open "
                                                          "blocks down to depth N)")
    p.add_argument("--expand", action="store_true", help="draw every repeat instead of folding ×N")
    p.add_argument("--details", action="store_true", help="add parameters, MACs and receptive field")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB", help="top-down or left-right")
    p.add_argument("--fuse", action="store_true", help="mark fused conv-batchnorm-relu groups")
    p.add_argument("--layer", metavar="NAME", help="for rf-grid: the layer whose unit to show (default: last "
                                                   "spatial layer)")
    p.add_argument("--unit", metavar="I,J", help="for rf-grid: the unit's position (default: the centre)")
    p.add_argument("--metrics", metavar="FILE", help="for curves, confusion, diagnostics and html: a metrics.jsonl "
                                                     "written by "
                                                     "cnnc run")
    p.add_argument("--checkpoint", metavar="PATH", help="for activations, kernels and html: trained weights "
                                                        "(default: the file's fixed weights)")
    p.add_argument("--image", metavar="FILE", help="for activations and html: the input image (default: a shipped "
                                                   "photograph)")
    p.add_argument("--layers", metavar="A,B,...", help="for activations, kernels and diagnostics: only these layers")
    p.add_argument("--epochs", metavar="E,F,...", help="for diagnostics: the epochs whose histograms are drawn "
                                                       "(default: the first, middle and last)")
    add_resize(p)
    p.add_argument("--page", type=int, metavar="N", help="for activations and kernels: which page of panels "
                                                         "(each fits a screen; default 1)")

    p = sub.add_parser("view", help="serve the explorer page and update it when the file is saved",
                       description="Serve the explorer page of a network on 127.0.0.1 and update it when the .cnn "
                                   "file (or a file it imports, the checkpoint, the image, the metrics) changes; "
                                   "compile errors show in the page. Ctrl-C stops it.")
    _common_compile_args(p)
    p.add_argument("--checkpoint", metavar="PATH", help="trained weights: the page shows feature maps and kernels")
    p.add_argument("--image", metavar="FILE", help="the image whose feature maps the page shows (default with "
                                                   "--checkpoint: a shipped photograph)")
    p.add_argument("--metrics", metavar="FILE", help="a metrics.jsonl: training curves and confusion matrix, "
                                                     "growing while cnnc run writes it")
    p.add_argument("--depth", type=int, metavar="N", help="open blocks down to depth N")
    add_resize(p)
    p.add_argument("--port", type=int, default=0, metavar="N", help="the port on 127.0.0.1 (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")

    from .cmd_export import EXPORTERS
    p = sub.add_parser("export", help="write a network for another framework (--to torch or onnx)",
                       description="Write a network for another framework (PyTorch source, an ONNX model), "
                                   "with its weights.")
    _common_compile_args(p)
    p.add_argument("--to", choices=tuple(EXPORTERS), required=True, help="the target framework")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write (torch: model.py, "
                                                                          "its weights beside it; onnx: model.onnx)")
    p.add_argument("--checkpoint", metavar="PATH", help="weights: a checkpoint written by cnnc run "
                                                        "(default: the seeded initial weights)")
    p.add_argument("--fuse", action="store_true", help="onnx: export the fused inference graph (batchnorm folded)")
    p.add_argument("--raw", action="store_true", help="with --checkpoint: leave out the training's preprocessing "
                                                      "(default: the model applies it to its input first)")

    p = sub.add_parser("import", help="an ONNX model as a readable .cnn file and a checkpoint of its weights",
                       description="Read an ONNX model (opsets 13 to 21; pip install 'cnnc[onnx]') and write it as a "
                                   ".cnn file — repeated structures as blocks — and its weights as a cnnc checkpoint "
                                   "beside it (docs/import.md).")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the .cnn file to write (the weights go "
                                                                          "beside it as FILE.npz)")
    p.add_argument("--no-weights", action="store_true", help="write the .cnn file only")
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)   # a flag it does not know is reported with its usage
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, parsed; a flag the command does not take exits 2 with that command's usage
    (`cnnc compile: error: unrecognized arguments: --epochs 3`), not the top level's."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _silence_stdout() -> None:
    """After stdout failed, point it at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------- commands
def _compile(args: argparse.Namespace, train=()):
    from .cmd_compile import compile_args
    return compile_args(args, train=train)


def cmd_check(args) -> int:
    from .cmd_compile import check
    return check(args, print_diagnostic)


def cmd_compile(args) -> int:
    from .cmd_compile import compile_
    return compile_(args, print_diagnostic)


def cmd_run(args) -> int:
    from .cmd_run import run, train_flags
    from .runtime.kernels import keep_freed_memory
    keep_freed_memory()  # a trainer keeps its peak heap for reuse (runtime/kernels/_alloc.py)
    return run(args, _compile(args, train_flags(args)))


def cmd_predict(args) -> int:
    from .cmd_run import predict
    from .runtime.kernels import keep_freed_memory
    keep_freed_memory()
    return predict(args, _compile(args))


def cmd_search(args) -> int:
    from .cmd_search import search
    return search(args)


def cmd_evaluate(args) -> int:
    from .cmd_evaluate import evaluate
    return evaluate(args, _compile(args))


def cmd_viz(args) -> int:
    from .cmd_viz import check_flags, viz
    check_flags(args)  # before compiling: a flag mistake is reported first
    return viz(args, _compile(args))


def cmd_view(args) -> int:
    from .cmd_view import view
    return view(args)


def cmd_export(args) -> int:
    from .cmd_export import check_flags, export
    check_flags(args)  # before compiling: a flag mistake is reported first
    return export(args, _compile(args))


def cmd_apply(args) -> int:
    from .cmd_apply import apply
    return apply(args)


def cmd_import(args) -> int:
    from .cmd_import import import_command
    return import_command(args)


def cmd_make_shapes(args) -> int:
    from .cmd_shapes import make_shapes_command
    return make_shapes_command(args)


COMMANDS = {"check": cmd_check, "compile": cmd_compile, "run": cmd_run, "predict": cmd_predict,
            "search": cmd_search, "evaluate": cmd_evaluate, "viz": cmd_viz, "view": cmd_view, "apply": cmd_apply,
            "export": cmd_export, "import": cmd_import, "make-shapes": cmd_make_shapes}


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    from .runtime.processes import leave
    return leave(code)    # a training process of several ends without the interpreter's teardown


def _main(argv: list[str] | None) -> int:
    from .compiler.elaborate import RECURSION_LIMIT
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))  # nested blocks recurse
    args = parse(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # what `--nproc` starts again in each process
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a full disk or closed pipe surfaces here, not in the interpreter's exit
        return code
    except CnncError as err:
        print_diagnostic(err.diagnostic)
        return 1
    except KeyboardInterrupt:
        from .runtime.progress import fresh_row
        fresh_row(sys.stderr)   # a bar interrupted mid-draw has not ended its line
        print("cnnc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
            return _internal_error(err)
        _silence_stdout()
        print(f"cnnc: error: cannot write the output: {err.strerror or err}", file=sys.stderr)
        return 1
    except RecursionError:
        print("cnnc: error: the program nests too deeply to analyse", file=sys.stderr)
        return 1
    except MemoryError:
        print("cnnc: error: out of memory; try a smaller --batch or input size", file=sys.stderr)
        return 1
    except Exception as err:
        return _internal_error(err)


def _internal_error(err: Exception) -> int:
    """A bug in cnnc: say so plainly, without a traceback unless CNNC_DEBUG asks for it."""
    if os.environ.get("CNNC_DEBUG"):
        raise err
    print(f"cnnc: internal error: {type(err).__name__}: {err}\n"
          "  this is a bug in cnnc; rerun with CNNC_DEBUG=1 for the traceback", file=sys.stderr)
    return 70
