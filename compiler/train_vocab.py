"""Stage 2 (compiler): the train vocabulary — every key, every choice, every option, declared once.

A `train { ... }` section is made of keys (`epochs = 10`) and of choices
from families (`optimizer = adam(lr = 0.003)`, `augment = [hflip]`). This
module is the one home of that vocabulary: for each key and for each option
of each choice its name, its kind of value (a checker that returns the value
normalised or raises `Invalid` saying what was expected), its default and a
line of documentation. The checker (`train_spec`) reads it to validate a file
or a command-line flag, and the runtime reads it to build the loss, the
optimizer, the schedule, the augmentations, the preprocessing and the data
with exactly these options and defaults (its factories take the declared
options as parameters; a coverage test holds the two to the same names).
The compiler may not import the runtime, so the runtime asks this table,
never the other way round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

REQUIRED = object()   # the default of an option that must be given


class Invalid(ValueError):
    """A value of the wrong kind: the message says what was expected ("a positive number")."""


Check = Callable[[Any], Any]


# ------------------------------------------------------------------ kinds
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _word(v: Any) -> Any:
    """A bare word arrives as a call without arguments (Spec); its name is the word."""
    if hasattr(v, "name") and not getattr(v, "args", ()) and not getattr(v, "kwargs", ()):
        return v.name
    return v


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite real number within the given bounds."""
    def bounds() -> str:
        if low is None and high is None:
            return "a finite number"
        if high is None:
            return "a positive number" if (low == 0 and low_open) else \
                ("a non-negative number" if low == 0 else f"a number {'>' if low_open else '>='} {low:g}")
        lo = ("(" if low_open else "[") + f"{low:g}"
        return f"a number in {lo}, {high:g}" + (")" if high_open else "]")

    def check(v: Any) -> float:
        if not _is_number(v) or not math.isfinite(v):
            raise Invalid(bounds())
        if low is not None and (v <= low if low_open else v < low):
            raise Invalid(bounds())
        if high is not None and (v >= high if high_open else v > high):
            raise Invalid(bounds())
        return v
    check.__doc__ = bounds()
    return check


def integer(low: int = 0, high: int = 10**7) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid("a positive integer" if low == 1 else f"an integer >= {low}")
        if v < low:
            raise Invalid("a positive integer" if low == 1 else f"an integer >= {low}")
        if v > high:
            raise Invalid(f"an integer <= {high}")
        return v
    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid("true or false")
    return v


def choice(*words: str) -> Check:
    def check(v: Any) -> str:
        v = _word(v)
        if v not in words:
            raise Invalid("one of " + ", ".join(words))
        return v
    check.words = words   # written bare (`mode = min`), not in quotes as a path is
    return check


def text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise Invalid('a path in quotes, e.g. "digits/"')
    return v


def names(v: Any) -> tuple[str, ...]:
    """A list of distinct, non-empty names in quotes."""
    items = v if isinstance(v, tuple) else None
    if not items or not all(isinstance(x, str) and x.strip() for x in items) or len(set(items)) != len(items):
        raise Invalid('a list of distinct names in quotes, e.g. ["cat", "dog"]')
    if len(items) > 100_000:
        raise Invalid("at most 100,000 names")
    return tuple(items)


def numbers(count: int, item: Check) -> Check:
    """A tuple of `count` values, each checked by `item`."""
    def check(v: Any) -> tuple:
        if not isinstance(v, tuple) or len(v) != count:
            raise Invalid(f"a tuple of {count} values")
        return tuple(item(x) for x in v)
    return check


def numbers_list(item: Check) -> Check:
    """A non-empty list of values, each checked by `item`."""
    def check(v: Any) -> tuple:
        if not isinstance(v, tuple) or not v:
            raise Invalid("a list of numbers, e.g. [1, 0.5]")
        try:
            return tuple(item(x) for x in v)
        except Invalid as bad:
            raise Invalid(f"a list of numbers, each {bad}") from None
    return check


def one_or_pair(item: Check) -> Check:
    """A value, or a (low, high) pair with low <= high."""
    def check(v: Any) -> Any:
        if isinstance(v, tuple):
            low, high = numbers(2, item)(v)
            if low > high:
                raise Invalid("a value or a (low, high) pair with low <= high")
            return (low, high)
        return item(v)
    return check


def one_or_many(item: Check) -> Check:
    """A value, or one value per channel."""
    def check(v: Any) -> Any:
        if isinstance(v, tuple):
            if not v:
                raise Invalid("a number or one number per channel")
            return tuple(item(x) for x in v)
        return item(v)
    return check


def shape(v: Any) -> tuple[int, ...]:
    if not isinstance(v, tuple) or not v or not all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 10**5 for d in v):
        raise Invalid("a tuple of positive sizes, e.g. (1, 28, 28)")
    return v


def image_size(v: Any) -> Any:
    if isinstance(v, tuple):
        if len(v) != 2:
            raise Invalid("a size or an (height, width) pair")
        return tuple(integer(1, 10**5)(d) for d in v)
    return integer(1, 10**5)(v)


def schedule_spec(v: Any) -> Any:
    """A nested schedule (warmup's `then`): checked by the checker against SCHEDULES."""
    return v


# ------------------------------------------------------------------ declarations
@dataclass(frozen=True)
class Option:
    """One option of a choice: `name = value`."""

    name: str
    check: Check
    default: Any
    doc: str
    param: str | None = None           # the runtime's parameter name, when it differs
    aliases: tuple[str, ...] = ()      # other spellings accepted in a train section

    @property
    def target(self) -> str:
        return self.param or self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Entry:
    """One choice of a family, e.g. the optimizer `adam`, with its options."""

    name: str
    doc: str
    options: tuple[Option, ...] = ()
    positional: tuple[str, ...] = ()   # options that may be given without their name, in order

    def option(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name or name in o.aliases:
                return o
        return None

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.options]


@dataclass(frozen=True)
class Family:
    """A train key whose value is chosen among entries (`what` names it in messages)."""

    key: str
    what: str
    entries: dict[str, Entry]
    common: tuple[Option, ...] = ()    # options every entry takes (handled by the trainer)
    many: bool = False                 # a list of choices (augment, preprocess)

    def options_of(self, entry: Entry) -> tuple[Option, ...]:
        return self.common + entry.options


@dataclass(frozen=True)
class Key:
    """A train key with a plain value (`epochs = 10`) or a family of choices."""

    name: str
    doc: str
    check: Check | None = None
    default: Any = None
    family: Family | None = None


def _entries(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
PROBABILITY = number(0, 1)
UNIT_OPEN = number(0, 1, high_open=True)

# -------------------------------------------------------------- data sets
def _channels(v: Any) -> int:
    if v not in (1, 3) or isinstance(v, bool):
        raise Invalid("1 or 3")
    return v


DATA = Family("data", "data set", _entries(
    Entry("mnist10k", "10,000 MNIST digits embedded in cnnc (8,000 train, 2,000 test)"),
    Entry("path", 'a path given as a string: an .npz, an MNIST IDX folder, an image folder or a segmentation folder',
          (Option("path", text, REQUIRED, "the file or folder"),), ("path",)),
    Entry("npz", "an .npz archive with x_train, y_train (and x_test, y_test)",
          (Option("path", text, REQUIRED, "the .npz file"),), ("path",)),
    Entry("idx", "a folder with MNIST IDX files",
          (Option("path", text, REQUIRED, "the folder"),), ("path",)),
    Entry("images", "a folder with one sub-folder of images per class",
          (Option("path", text, REQUIRED, "the folder"),
           Option("size", image_size, None, "resize every image to size x size (or (h, w))"),
           Option("channels", _channels, None,
                  "convert every image to 1 (grey) or 3 (RGB) channels")), ("path",)),
    Entry("segmentation", "a folder of images and masks: DIR/images/*, DIR/masks/* (or DIR/train/..., "
          "DIR/test/...), optional DIR/classes.txt",
          (Option("path", text, REQUIRED, "the folder"),
           Option("size", image_size, None, "resize every image and mask to size x size (or (h, w))"),
           Option("channels", _channels, None,
                  "convert every image to 1 (grey) or 3 (RGB) channels")), ("path",)),
    Entry("synthetic", "generated data that fits the network (classes, masks or regression targets)",
          (Option("n", integer(1, 10**6), None, "training samples (the test split gets n/4)"),
           Option("classes", integer(1, 10**4), None, "classes (default: the network's outputs)"),
           Option("shape", shape, None, "the sample shape (default: the network's input)"),
           Option("kind", choice("classes", "segmentation", "regression"), None,
                  "what to generate (default: from the output's rank)"),
           Option("seed", integer(0, 2**32 - 1), 0, "the generator's seed"),
           Option("noise", NON_NEGATIVE, None, "standard deviation of the added noise"))),
    Entry("mnist", "MNIST: 60,000 train and 10,000 test digits, downloaded on first use"),
    Entry("fashion_mnist", "Fashion-MNIST: 60,000 train and 10,000 test clothing images, downloaded on first use"),
    Entry("cifar10", "CIFAR-10: 50,000 train and 10,000 test colour images in 10 classes, downloaded on first use"),
    Entry("cifar100", "CIFAR-100: 50,000 train and 10,000 test colour images in 100 classes (fine labels), "
                      "downloaded on first use"),
), common=(Option("val", UNIT_OPEN, None, "fraction of the training split held out for validation"),
           Option("limit", integer(1), None, "use only the first N training samples"),
           Option("test", UNIT_OPEN, None, "fraction of the training split held out as the test split "
                                           "(for data that ships none)"),
           Option("targets", choice("labels", "inputs"), "labels",
                  "each sample's target: its label, or its own input as read (an autoencoder)")))



# -------------------------------------------------------------- losses
_SMOOTHING = Option("label_smoothing", PROBABILITY, 0.0, "mix this much of the uniform distribution into "
                                                        "the targets")
_IGNORE = Option("ignore_index", integer(-10**9), None, "a label whose samples (pixels) count for nothing")
LOSS = Family("loss", "loss", _entries(
    Entry("cross_entropy", "softmax cross-entropy on class labels", (_SMOOTHING, _IGNORE)),
    Entry("pixel_cross_entropy", "per-pixel softmax cross-entropy on masks", (_SMOOTHING, _IGNORE)),
    Entry("bce", "binary cross-entropy on logits (0/1 targets)"),
    Entry("multilabel_bce", "independent sigmoid cross-entropy per output"),
    Entry("mse", "mean squared error"),
    Entry("smooth_l1", "Huber loss", (Option("beta", NON_NEGATIVE, 1.0, "where the loss turns linear"),)),
))

# -------------------------------------------------------------- optimizers
_LR = Option("lr", POSITIVE, 0.01, "the learning rate")
_WD = Option("weight_decay", NON_NEGATIVE, 0.0, "L2 penalty folded into the gradient")
_BETAS = Option("betas", numbers(2, number(0, 1, high_open=True)), (0.9, 0.999), "moment decay rates")
_EPS8 = Option("eps", POSITIVE, 1e-8, "added to the denominator")
_AMSGRAD = Option("amsgrad", boolean, False, "use the running maximum of the second moment")
OPTIMIZER = Family("optimizer", "optimizer", _entries(
    Entry("sgd", "stochastic gradient descent", (
        _LR, Option("momentum", NON_NEGATIVE, 0.0, "momentum factor"),
        Option("dampening", NON_NEGATIVE, 0.0, "dampening of the momentum"),
        Option("nesterov", boolean, False, "Nesterov momentum"), _WD)),
    Entry("adam", "Adam", (_LR, _BETAS, _EPS8, _WD, _AMSGRAD)),
    Entry("adamw", "Adam with decoupled weight decay",
          (_LR, _BETAS, _EPS8, Option("weight_decay", NON_NEGATIVE, 1e-2, "decoupled weight decay"), _AMSGRAD)),
    Entry("adagrad", "Adagrad", (
        _LR, Option("lr_decay", NON_NEGATIVE, 0.0, "learning-rate decay per step"), _WD,
        Option("initial_accumulator_value", NON_NEGATIVE, 0.0, "start of the squared-gradient sum"),
        Option("eps", POSITIVE, 1e-10, "added to the denominator"))),
    Entry("rmsprop", "RMSprop", (
        _LR, Option("alpha", number(0, 1), 0.99, "smoothing constant"), _EPS8, _WD,
        Option("momentum", NON_NEGATIVE, 0.0, "momentum factor"),
        Option("centered", boolean, False, "normalise by the estimated variance"))),
))

# -------------------------------------------------------------- schedules
# The figures of an epoch's record a schedule or early stopping can watch (runtime/train/monitors.py reads them).
MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
_MONITOR = Option("monitor", choice(*MONITORS), "val_loss", "the figure of each epoch it watches; a val_ figure "
                                                              "needs a validation split")
SCHEDULE = Family("schedule", "schedule", _entries(
    Entry("constant", "the optimizer's rate throughout"),
    Entry("step", "multiply by gamma every step_size epochs", (
        Option("step_size", integer(1), REQUIRED, "epochs between cuts", aliases=("every",)),
        Option("gamma", POSITIVE, 0.1, "the factor of each cut")), ("step_size",)),
    Entry("cosine", "cosine annealing", (
        Option("T_max", integer(1), None, "half period in epochs (default: the run)"),
        Option("eta_min", NON_NEGATIVE, 0.0, "the lowest rate", aliases=("min_lr",)))),
    Entry("cosine_restarts", "cosine annealing with warm restarts (SGDR): cycles of T_0, T_0*T_mult, ... epochs", (
        Option("T_0", integer(1), REQUIRED, "epochs of the first cycle"),
        Option("T_mult", integer(1), 1, "each cycle is this many times longer than the one before"),
        Option("eta_min", NON_NEGATIVE, 0.0, "the lowest rate", aliases=("min_lr",))), ("T_0",)),
    Entry("plateau", "cut the rate when the monitored figure stops improving (ReduceLROnPlateau)", (
        _MONITOR,
        Option("mode", choice("min", "max"), None, "whether lower or higher is better (default: min for a loss, "
                                                    "max for an accuracy); must agree with the monitor"),
        Option("factor", number(0, 1, low_open=True, high_open=True), 0.1, "the factor of each cut"),
        Option("patience", integer(0), 10, "epochs without improvement before a cut"),
        Option("threshold", NON_NEGATIVE, 1e-4, "what counts as an improvement"),
        Option("threshold_mode", choice("rel", "abs"), "rel", "threshold relative or absolute"),
        Option("cooldown", integer(0), 0, "epochs to wait after a cut"),
        Option("min_lr", NON_NEGATIVE, 0.0, "the lowest rate"),
        Option("eps", NON_NEGATIVE, 1e-8, "smaller cuts are ignored"))),
    Entry("warmup", "ramp up linearly, then another schedule", (
        Option("epochs", integer(1), REQUIRED, "epochs of warm-up", param="warmup_epochs"),
        Option("then", schedule_spec, None, "the schedule after the warm-up"),
        Option("start_factor", number(0, 1, low_open=True), None,
               "the first epoch's fraction of the rate (default 1/(epochs+1))")), ("epochs",)),
))

# -------------------------------------------------------------- augmentation
_SPREAD = one_or_pair(NON_NEGATIVE)


def _hue(v: Any) -> Any:
    """torchvision's hue: a spread in [0, 0.5], or a (low, high) pair within [-0.5, 0.5]."""
    if isinstance(v, tuple):
        return one_or_pair(number(-0.5, 0.5))(v)
    return number(0, 0.5)(v)
AUGMENT = Family("augment", "augmentation", _entries(
    Entry("random_crop", "pad, then crop at a random offset",
          (Option("padding", integer(0, 10**4), 4, "pixels of zero padding per side"),), ("padding",)),
    Entry("random_rotation", "rotate by a random angle",
          (Option("degrees", one_or_pair(number(-360, 360)), 15.0, "the largest angle, or a range"),),
          ("degrees",)),
    Entry("random_resized_crop", "crop a random box and resize it back", (
        Option("scale", numbers(2, number(0, 1, low_open=True)), (0.08, 1.0), "range of the box's area"),
        Option("ratio", numbers(2, POSITIVE), (3 / 4, 4 / 3), "range of the box's aspect"))),
    Entry("hflip", "mirror left-right", (Option("p", PROBABILITY, 0.5, "the probability"),), ("p",)),
    Entry("color_jitter", "random brightness, contrast, saturation and hue (torchvision's ColorJitter)", (
        Option("brightness", _SPREAD, 0.0, "spread of the brightness factor"),
        Option("contrast", _SPREAD, 0.0, "spread of the contrast factor"),
        Option("saturation", _SPREAD, 0.0, "spread of the saturation factor"),
        Option("hue", _hue, 0.0, "spread of the hue shift in turns of the colour wheel: h draws the shift from "
                                  "[-h, h] (h <= 0.5), a pair (low, high) from that range"))),
    Entry("gaussian_noise", "add Gaussian noise",
          (Option("std", NON_NEGATIVE, 0.1, "its standard deviation"),), ("std",)),
), many=True)

# -------------------------------------------------------------- preprocessing
_PER_CHANNEL = one_or_many(number())
PREPROCESS = Family("preprocess", "preprocessing", _entries(
    Entry("normalize", "(x - mean) / std per channel; measured on the training split unless given", (
        Option("mean", _PER_CHANNEL, None, "per-channel mean"),
        Option("std", one_or_many(POSITIVE), None, "per-channel standard deviation")), ("mean", "std")),
    Entry("center", "subtract the training split's per-channel mean"),
    Entry("scale", "multiply every input value by a factor",
          (Option("factor", number(), REQUIRED, "the factor"),), ("factor",)),
), many=True)

# -------------------------------------------------------------- early stopping
EARLY_STOP = Family("early_stop", "early stopping", _entries(
    Entry("early_stop", "stop when the monitored figure has not improved for `patience` epochs (Keras's "
                        "EarlyStopping)", (
        _MONITOR,
        Option("patience", integer(1), 5, "epochs without improvement before the run stops"),
        Option("min_delta", NON_NEGATIVE, 0.0, "a change smaller than this is no improvement"),
        Option("mode", choice("min", "max"), None, "whether lower or higher is better (default: from the "
                                                    "monitor); must agree with the monitor")), ("patience",)),
))

# -------------------------------------------------------------- initialisation
# PyTorch's torch.nn.init formulas; fan_in and fan_out as torch computes them from the weight's shape.
_INIT_A = Option("a", NON_NEGATIVE, 0.0, "the negative slope of the leaky rectifier that follows (0: relu)")
_INIT_MODE = Option("mode", choice("fan_in", "fan_out"), "fan_in",
                    "fan_in keeps the variance of the forward pass, fan_out that of the backward pass")
_INIT_GAIN = Option("gain", POSITIVE, 1.0, "a factor on the standard deviation or bound")
INIT = Family("init", "initialisation", _entries(
    Entry("kaiming_normal", "N(0, std^2), std = gain / sqrt(fan), gain = sqrt(2 / (1 + a^2)) (He et al. 2015)",
          (_INIT_A, _INIT_MODE)),
    Entry("kaiming_uniform", "U(-bound, bound), bound = gain * sqrt(3 / fan), gain = sqrt(2 / (1 + a^2))",
          (_INIT_A, _INIT_MODE)),
    Entry("xavier_normal", "N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010)",
          (_INIT_GAIN,)),
    Entry("xavier_uniform", "U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out))", (_INIT_GAIN,)),
    Entry("normal", "N(mean, std^2)", (Option("std", POSITIVE, REQUIRED, "the standard deviation"),
                                       Option("mean", number(), 0.0, "the mean")), ("std", "mean")),
    Entry("uniform", "U(-a, a)", (Option("a", POSITIVE, REQUIRED, "the bound"),), ("a",)),
    Entry("zeros", "all weights zero"),
))

# -------------------------------------------------------------- keys
KEYS: dict[str, Key] = {k.name: k for k in (
    Key("data", "the data set", family=DATA),
    Key("epochs", "epochs to train", integer(1), 10),
    Key("batch", "samples per batch", integer(1), 64),
    Key("drop_last", "drop each epoch's last batch when it is smaller than batch (PyTorch's DataLoader)",
        boolean, False),
    Key("seed", "seed of every random draw", integer(0, 2**32 - 1), 0),
    Key("loss", "the loss: a built-in loss, a weighted sum of them (0.5 * mse + smooth_l1), or a list with "
                "one per output, in the order of `output`", family=LOSS),
    Key("loss_weights", "a weight per output, multiplying its loss in the total (Keras's loss_weights)",
        numbers_list(NON_NEGATIVE)),
    Key("optimizer", "the optimizer", family=OPTIMIZER),
    Key("lr", "shorthand for the optimizer's learning rate", POSITIVE),
    Key("schedule", "the learning-rate schedule", family=SCHEDULE),
    Key("augment", "augmentations of each training batch", family=AUGMENT),
    Key("preprocess", "preprocessing of every split", family=PREPROCESS),
    Key("normalize", "shorthand for preprocess = normalize(mean, std)", family=PREPROCESS),
    Key("l1", "L1 penalty on conv/linear weights", NON_NEGATIVE, 0.0),
    Key("l2", "L2 penalty on conv/linear weights", NON_NEGATIVE, 0.0),
    Key("early_stop", "stop when a figure stops improving: early_stop(monitor, patience, min_delta), or a "
                      "number of epochs (the patience)", family=EARLY_STOP),
    Key("val", "validation fraction of the training split", UNIT_OPEN),
    Key("classes", "names of the classes in label order (predict prints them)", names),
    Key("sync_bn", "batchnorm statistics over the global batch when several processes train "
                   "(--engine torch --nproc N)", boolean, False),
    Key("test", "test fraction of the training split, for data without a test split", UNIT_OPEN),
    Key("init", "the initialisation of conv, deconv, local and linear weights (default: He-normal before "
                "rectifiers, Xavier-uniform otherwise)", family=INIT),
    Key("kfold", "k-fold cross-validation: train K models, each validated on one K-th of the training split",
        integer(2, 1000)),
    Key("bootstrap", "train on a bootstrap resample of the training split (bagging)", boolean, False),
    Key("snapshots", "keep a checkpoint snapshot-K.npz at the end of each cosine_restarts cycle", boolean, False),
)}

FAMILIES: dict[str, Family] = {f.key: f for f in (DATA, LOSS, OPTIMIZER, SCHEDULE, AUGMENT, PREPROCESS, INIT,
                                                  EARLY_STOP)}


def entry_options(family: Family, name: str) -> tuple[Option, ...]:
    """Every option of a family's entry (the family's common options first)."""
    return family.options_of(family.entries[name])


def bound_options(family: Family, name: str, given: dict[str, Any], *,
                  common: bool = False) -> dict[str, Any]:
    """The runtime's keyword arguments for an entry: each declared option, given or defaulted,
    under the runtime's parameter name. Options left at REQUIRED are omitted."""
    entry = family.entries[name]
    out: dict[str, Any] = {}
    for o in (family.common if common else ()) + entry.options:
        value = given.get(o.name, o.default)
        if value is not REQUIRED:
            out[o.target] = value
    return out

