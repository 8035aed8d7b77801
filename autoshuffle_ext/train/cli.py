"""`autoshuffle-train`: train ShuffleNet with fixed, learned (AutoShuffleNet) or relaxed
(Sinkhorn) channel shuffles, and compare them.

Each variant trains in `<out>/<shuffle>/` (checkpoint, metrics.csv/json, report.md, plots); the
table of all variants is printed and written to `<out>/comparison.md` and `.json`. Multi-process:
`torchrun --nproc-per-node N -m autoshuffle_ext.train ...` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..models import MODEL_NAMES
from ..modules import SHUFFLE_KINDS
from ..modules.init import INITS
from .config import TrainConfig
from .data import DATASETS, load_dataset
from .distributed import init_distributed
from .errors import ConfigError, TrainingError
from .loop import run_training
from .schedules import PENALTY_SCHEDULES

__all__ = ["build_parser", "main"]

PROG = "autoshuffle-train"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to every flag whose default is not None; the help of the others
    says what they fall back to."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and "default" not in text:
            if not isinstance(action, argparse._StoreTrueAction | argparse._HelpAction):
                text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag's default is TrainConfig's."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=_HelpFormatter)
    what = p.add_argument_group("what to train")
    what.add_argument(
        "--model",
        default=d.model,
        help="shufflenet_v1_g<groups>[_x<w>_<w>] or shufflenet_v2_x<w>_<w>, e.g. "
        + ", ".join(MODEL_NAMES[:3] + MODEL_NAMES[-4:-2]),
    )
    what.add_argument(
        "--shuffle", default=d.shuffle, choices=SHUFFLE_KINDS, help="shuffle kind of every unit"
    )
    what.add_argument(
        "--groups",
        default=d.groups,
        choices=("fixed", "learned"),
        help="group counts of the pointwise convs (v1): fixed (the model name's) or learned "
        "(DGConv2d, started on them)",
    )
    what.add_argument(
        "--budget",
        type=float,
        default=None,
        help="with --groups learned: the multiply-adds the pointwise convs may keep together, as "
        "a fraction of their dense cost; a hinge penalty above it (default: none). The start "
        "(the model name's groups) costs what `python -m autoshuffle_ext.models --groups learned` "
        "lists as the budget that matches the fixed model",
    )
    # Flags of --groups learned only: no default here, so that giving one without it is seen.
    what.add_argument(
        "--budget-weight",
        type=float,
        default=None,
        help="with --groups learned: lambda of the --budget term (its hinge on the cost "
        f"fraction) (default: {d.budget_weight})",
    )
    what.add_argument(
        "--gate-init",
        type=float,
        default=None,
        help="with --groups learned: |gate parameter| at the start. A gate flips (its layer "
        "changes group count) when its parameter crosses 0, so a smaller value lets the group "
        f"counts move sooner (default: {d.gate_init})",
    )
    what.add_argument(
        "--compare",
        default=None,
        help="comma-separated shuffle kinds to train one after the other with the same seed and "
        "data, e.g. fixed,learned,sinkhorn (default: only --shuffle)",
    )
    what.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds: train every variant once per seed (into <out>/<kind>/"
        "seed<N>) and report mean, spread and the paired difference to fixed (default: --seed)",
    )
    what.add_argument("--dataset", default=d.dataset, choices=DATASETS, help="data set")
    what.add_argument(
        "--data-dir",
        default=None,
        help="folder of the data set: CIFAR 'python version' files, or train/ and val/ class "
        "folders for --dataset folder (default: none; digits ship with scikit-learn)",
    )
    what.add_argument(
        "--stem",
        default=None,
        choices=("imagenet", "cifar"),
        help="input stem (default: cifar for digits/CIFAR, imagenet for folders)",
    )
    what.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side (default: 16 digits, 32 CIFAR, 224 folders)",
    )

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    optim.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="batch size per process"
    )
    optim.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (SGD)")
    optim.add_argument(
        "--shuffle-lr",
        type=float,
        default=None,
        help="peak learning rate of the shuffle matrices (default: --lr)",
    )
    optim.add_argument(
        "--gate-lr",
        type=float,
        default=None,
        help="peak learning rate of the group-count gates of --groups learned (default: --lr)",
    )
    optim.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    optim.add_argument("--nesterov", action="store_true", help="Nesterov momentum (default: off)")
    optim.add_argument(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help="weight decay of conv/fc weights (never on BN, biases or shuffle matrices)",
    )
    optim.add_argument(
        "--warmup-epochs",
        type=float,
        default=d.warmup_epochs,
        help="linear LR warm-up before the cosine decay (fractions allowed)",
    )
    optim.add_argument(
        "--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing"
    )

    shuffle = p.add_argument_group("learned shuffle")
    shuffle.add_argument(
        "--penalty-weight",
        type=float,
        default=d.penalty_weight,
        help="lambda of every learned shuffle (LearnedShuffle.penalty_weight): the loss adds "
        "lambda * P(M) per shuffle, times the schedule's factor in [0, 1]",
    )
    shuffle.add_argument(
        "--penalty-schedule",
        default=d.penalty_schedule,
        choices=PENALTY_SCHEDULES,
        help="linear: scale the penalties from 0 at --penalty-start to 1 at --penalty-ramp of "
        "training; constant: no ramp",
    )
    shuffle.add_argument(
        "--penalty-ramp",
        type=float,
        default=d.penalty_ramp,
        help="fraction of training at which the linear ramp of the penalties reaches 1",
    )
    shuffle.add_argument(
        "--penalty-start",
        type=float,
        default=d.penalty_start,
        help="fraction of training before which the penalties are off (the ramp starts here)",
    )
    shuffle.add_argument(
        "--shuffle-init",
        default=d.shuffle_init,
        choices=INITS,
        help="start of learned/sinkhorn matrices: shuffle (the fixed shuffle blended with "
        "uniform, see --shuffle-blend), identity or random (a random permutation, likewise), "
        "uniform (no prior permutation; see bench/RESULTS.md for what each start gives)",
    )
    shuffle.add_argument(
        "--shuffle-blend",
        type=float,
        default=d.shuffle_blend,
        help="weight of the uniform matrix in the shuffle/identity/random starts: (1 - b) P + b/C",
    )
    shuffle.add_argument(
        "--projection-iters",
        type=int,
        default=d.projection_iters,
        help="row/column scaling iterations of the projection after each step",
    )

    data = p.add_argument_group("augmentation")
    data.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on, except for digits)",
    )
    data.add_argument(
        "--crop-padding",
        type=int,
        default=None,
        help="random crop padding in pixels (default: 2 digits, 4 CIFAR, 16 folders; 0: off)",
    )

    run = p.add_argument_group("run")
    run.add_argument("--out", default=None, help="run directory (default: runs/<dataset>-<model>)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the runs in --out from their last checkpoints (default: refuse to touch "
        "a directory that holds one)",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of weights, order, augmentation and random shuffles (default: {d.seed})",
    )
    run.add_argument("--device", default=d.device, help="auto (CUDA if present), cpu, cuda, cuda:N")
    run.add_argument(
        "--channels-last",
        action="store_true",
        help="model and batches in channels_last memory format (faster convolutions on most "
        "CPUs and GPUs; the learned shuffle then mixes with one GEMM) (default: off)",
    )
    run.add_argument(
        "--workers", type=int, default=d.workers, help="image decoding processes (folders only)"
    )
    run.add_argument(
        "--limit-batches",
        type=int,
        default=None,
        help="at most this many batches per epoch, for training and for evaluation (smoke runs; "
        "default: all)",
    )
    run.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="stop this invocation after this many epochs, as if interrupted; --resume "
        "continues (default: run to --epochs)",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bars (default: bars on a tty)"
    )
    return p


# The seeds numpy's global generator takes (the training seeds it, and Python's and torch's).
MAX_SEED = 2**32 - 1

# The flags that only --groups learned reads.
_LEARNED_GROUPS_FLAGS = ("budget", "budget_weight", "gate_init", "gate_lr")


def _validate(args: argparse.Namespace) -> list[str]:
    problems = []
    for flag in ("epochs", "batch_size", "limit_batches", "stop_after_epochs", "image_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    for flag in ("lr", "momentum", "weight_decay", "warmup_epochs", "penalty_weight"):
        value = getattr(args, flag)
        if not 0 <= value < math.inf:  # NaN fails too
            problems.append(f"--{flag.replace('_', '-')} must be >= 0 and finite, got {value}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        problems.append(f"--seed must lie in [0, {MAX_SEED}], got {args.seed}")
    if args.out is not None and not args.out.strip():
        problems.append(f"--out must name a folder, got {args.out!r}")
    if args.crop_padding is not None and args.crop_padding < 0:
        problems.append(f"--crop-padding must be >= 0 (0: off), got {args.crop_padding}")
    if not 0 <= args.label_smoothing < 1:
        problems.append(f"--label-smoothing must lie in [0, 1), got {args.label_smoothing}")
    if not 0 <= args.penalty_start <= args.penalty_ramp <= 1:
        problems.append(
            "--penalty-start and --penalty-ramp need 0 <= start <= ramp <= 1, got "
            f"{args.penalty_start} and {args.penalty_ramp}"
        )
    if args.budget is not None and not 0 < args.budget <= 1:
        problems.append(f"--budget must lie in (0, 1], got {args.budget}")
    if args.groups != "learned":
        for flag in _LEARNED_GROUPS_FLAGS:
            if getattr(args, flag) is not None:
                problems.append(
                    f"--{flag.replace('_', '-')} applies to --groups learned only, got --groups "
                    f"{args.groups}"
                )
    if args.gate_init is not None and not 0 < args.gate_init < math.inf:
        problems.append(f"--gate-init must be > 0 and finite, got {args.gate_init}")
    elif args.gate_init is not None and args.gate_init > torch.finfo(torch.float32).max:
        problems.append(
            f"--gate-init must be at most {torch.finfo(torch.float32).max:g} (the gates are "
            f"float32), got {args.gate_init:g}"
        )
    for flag in ("shuffle_lr", "gate_lr"):
        value = getattr(args, flag)
        if value is not None and not 0 <= value < math.inf:
            problems.append(f"--{flag.replace('_', '-')} must be >= 0 and finite, got {value}")
    if args.budget_weight is not None and not 0 <= args.budget_weight < math.inf:
        problems.append(f"--budget-weight must be >= 0 and finite, got {args.budget_weight}")
    if not 0 <= args.shuffle_blend <= 1:
        problems.append(f"--shuffle-blend must lie in [0, 1], got {args.shuffle_blend}")
    if args.projection_iters < 0 or args.workers < 0:
        problems.append("--projection-iters and --workers must be >= 0")
    return problems


def _variants(args: argparse.Namespace) -> list[str]:
    if args.compare is None:
        return [args.shuffle]
    kinds = [k.strip() for k in args.compare.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SHUFFLE_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(
            f"--compare takes distinct kinds among {', '.join(SHUFFLE_KINDS)}, got {args.compare!r}"
        )
    return kinds


def _seeds(args: argparse.Namespace) -> list[int] | None:
    """The seeds of --seeds (None without it)."""
    if args.seeds is None:
        return None
    if args.seed is not None:
        raise ConfigError("--seed and --seeds cannot both apply; give the seeds to --seeds")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or not 0 <= min(seeds) <= max(seeds) <= MAX_SEED:
        raise ConfigError(
            f"--seeds takes distinct non-negative integers (at most {MAX_SEED}) separated by "
            f"commas, got {args.seeds!r}"
        )
    return seeds


def _check_crop(args: argparse.Namespace, data) -> None:
    """Raises ConfigError unless the crop padding is smaller than the image side: a larger one
    crops images that are all padding."""
    size = args.image_size or data.image_size
    padding = data.crop_padding if args.crop_padding is None else args.crop_padding
    if padding >= size:
        source = f" (--dataset {args.dataset}'s default)" if args.crop_padding is None else ""
        raise ConfigError(
            f"--crop-padding must be smaller than the image side ({size}, --image-size), got "
            f"{padding}{source}; a lower --crop-padding (0: off) fits"
        )


def _check_writable(out: Path) -> None:
    """Raises ConfigError unless `out` is, or can be created as, a writable folder; creates
    nothing itself."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write there ({existing} is not writable)")


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name!r}: {error}") from None
    if device.type not in ("cpu", "cuda"):  # meta and the like hold no data to train on
        raise ConfigError(f"--device takes auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _config(args: argparse.Namespace, shuffle: str, seed: int | None) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values |= {"shuffle": shuffle, "progress": not args.no_progress}
    if seed is not None:
        values["seed"] = seed
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Runs the parsed command; raises TrainingError for the user's problems."""
    from ..models import parse_model_name
    from .compare import write_comparison

    kinds = _variants(args)
    seeds = _seeds(args)
    try:
        parse_model_name(args.model)
    except ValueError as error:
        raise ConfigError(f"--model: {error}") from None
    if args.dataset == "digits" and args.data_dir is not None:
        raise ConfigError(
            "--data-dir does not apply to --dataset digits (bundled with scikit-learn); drop it "
            "or choose a dataset that reads a folder"
        )
    out = Path(args.out or f"runs/{args.dataset}-{args.model}")
    _check_writable(out)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(args.device, local_rank)
    ctx = init_distributed(device)
    try:
        data = load_dataset(args.dataset, args.data_dir, args.image_size)
        _check_crop(args, data)
        results = []
        # Seed by seed, so that an interrupted comparison has whole pairs to show.
        for seed in seeds or [None]:
            for kind in kinds:
                run_dir = out / kind if seed is None else out / kind / f"seed{seed}"
                config = _config(args, kind, seed)
                result = run_training(config, data, run_dir, ctx, device, resume=args.resume)
                if result is None:  # --stop-after-epochs: the rest waits for --resume
                    return 0
                results.append(result)
        if ctx.is_main:
            seed_text = ",".join(str(r) for r in sorted({r.seed for r in results}))
            heading = (
                f"{args.model} on {args.dataset}, {results[0].epochs} epochs, "
                f"seed{'s' if seeds else ''} {seed_text}"
            )
            table = write_comparison(out, results, heading)
            print(f"\n{heading} ({ctx.world} process(es), {device.type})\n{table}")
            print(f"\nrun directory: {out}")
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `autoshuffle-train`; returns the exit status (0 on success, 2 for bad
    flags, data, checkpoints or a file system that refuses a write, 1 when training
    diverged)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = _validate(args)
    if problems:
        parser.error("; ".join(problems))
    try:
        return run(args)
    except TrainingError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the file system refused a write or a read: say where
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the last checkpoint of each run is intact", file=sys.stderr)
        return 130
