"""`autoshuffle-train`: train ShuffleNet with fixed, learned (AutoShuffleNet) or relaxed
(Sinkhorn) channel shuffles, and compare them.

Each variant trains in `<out>/<shuffle>/` (checkpoint, metrics.csv/json, report.md, plots); the
table of all variants is printed and written to `<out>/comparison.md` and `.json`. Multi-process:
`torchrun --nproc-per-node N -m autoshuffle_ext.train ...` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..models import LIPSCHITZ_MODELS, MODEL_NAMES
from ..modules import STRUCTURE_CONFIGS, StructureConfig
from .config import AMP_MODES, LOSSES, MAX_SEED, TrainConfig
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
        help="shufflenet_v1_g<groups>[_x<w>_<w>], shufflenet_v2_x<w>_<w> or a Lipschitz network, "
        "e.g. " + ", ".join(MODEL_NAMES[:3] + MODEL_NAMES[-4:-2] + tuple(LIPSCHITZ_MODELS)),
    )
    what.add_argument(
        "--compare",
        default=None,
        help="comma-separated values of the compared structure flag (--shuffle): the variants to "
        "train one after the other with the same seed and data, e.g. fixed,learned,sinkhorn "
        "(default: only the flag's value)",
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
    optim.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    optim.add_argument("--nesterov", action="store_true", help="Nesterov momentum (default: off)")
    optim.add_argument(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help="weight decay of conv/fc weights (never on BN, biases, or structure parameters "
        "unless their structure says so)",
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
    optim.add_argument(
        "--loss",
        default=d.loss,
        choices=LOSSES,
        help="cross_entropy, or hinge: the multi-class hinge loss with margin sqrt(2) * "
        "--certify, which trains a Lipschitz network (--model lipconvnet_small) for certified "
        "robustness",
    )
    optim.add_argument(
        "--certify",
        type=float,
        default=None,
        help="l2 radius EPS: each epoch also reports the validation accuracy certified at EPS "
        "(top logit beats every other by more than sqrt(2) L EPS, L the model's Lipschitz bound; "
        "e.g. 0.1412 = 36/255) (default: off)",
    )

    penalties = p.add_argument_group("penalty schedule (every learned structure)")
    penalties.add_argument(
        "--penalty-schedule",
        default=d.penalty_schedule,
        choices=PENALTY_SCHEDULES,
        help="linear: scale the penalties from 0 at --penalty-start to 1 at --penalty-ramp of "
        "training; constant: no ramp",
    )
    penalties.add_argument(
        "--penalty-ramp",
        type=float,
        default=d.penalty_ramp,
        help="fraction of training at which the linear ramp of the penalties reaches 1",
    )
    penalties.add_argument(
        "--penalty-start",
        type=float,
        default=d.penalty_start,
        help="fraction of training before which the penalties are off (the ramp starts here)",
    )
    for config_class in STRUCTURE_CONFIGS:
        config_class.add_arguments(p)

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
    run.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: its structure configs (asx.register_config) add their flags "
        "(repeatable; default: none)",
    )
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
        "--amp",
        default=d.amp,
        choices=AMP_MODES,
        help="mixed precision of the training steps: bf16 autocasts to bfloat16 (CPU and CUDA), "
        "fp16 to float16 with a gradient scaler (CUDA only); parameters, penalties, the "
        "projection, the rounding and evaluation stay float32",
    )
    run.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model for the training steps (a minute of compiling first on a "
        "CPU; then faster steps, see the README) (default: off)",
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


def _validate(args: argparse.Namespace) -> list[str]:
    """The flags' problems that TrainConfig and the structure configs do not see."""
    problems = []
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        problems.append(f"--seed must lie in [0, {MAX_SEED}], got {args.seed}")
    if args.out is not None and not args.out.strip():
        problems.append(f"--out must name a folder, got {args.out!r}")
    return problems


def _compare_dest() -> tuple[type[StructureConfig], str] | None:
    """The structure config whose flag --compare varies, and the flag's dest."""
    for config_class in STRUCTURE_CONFIGS:
        if config_class.compare is not None:
            return config_class, config_class.compare
    return None


def _variants(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str | None]:
    """The values of the compared flag to train (None: the flags as given)."""
    if args.compare is None:
        return [None]
    found = _compare_dest()
    if found is None:
        raise ConfigError("--compare: no structure declares a flag to compare")
    dest = found[1]
    action = next(a for a in parser._actions if a.dest == dest)
    kinds = [k.strip() for k in args.compare.split(",") if k.strip()]
    allowed = tuple(action.choices or ())
    unknown = [k for k in kinds if allowed and k not in allowed]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(
            f"--compare takes distinct kinds among {', '.join(allowed)}, got {args.compare!r}"
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


def _structures(args: argparse.Namespace, variant: str | None) -> tuple[StructureConfig, ...]:
    """Each registered structure's config from the flags (with the compared flag at `variant`)."""
    if variant is not None:
        args = argparse.Namespace(**{**vars(args), _compare_dest()[1]: variant})
    configs = []
    for config_class in STRUCTURE_CONFIGS:
        try:
            config = config_class.from_arguments(args)
        except (ValueError, TypeError) as error:
            raise ConfigError(str(error)) from None
        if config is not None:
            configs.append(config)
    return tuple(configs)


def _config(args: argparse.Namespace, variant: str | None, seed: int | None) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"structures", "variant"}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values |= {"progress": not args.no_progress, "structures": _structures(args, variant)}
    if variant is not None:
        values["variant"] = variant
    if seed is not None:
        values["seed"] = seed
    return TrainConfig(**values)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Runs the parsed command; raises TrainingError for the user's problems."""
    from ..models import check_model_name
    from .compare import write_comparison

    kinds = _variants(parser or build_parser(), args)
    seeds = _seeds(args)
    # Every variant's config, checked before anything runs or is written.
    configs = {kind: _config(args, kind, None) for kind in kinds}
    try:
        check_model_name(args.model)
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
                config = configs[kind]
                if seed is not None:
                    config = dataclasses.replace(config, seed=seed)
                variant = config.variant
                run_dir = out / variant if seed is None else out / variant / f"seed{seed}"
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


def _import_plugins(argv: list[str] | None) -> None:
    """Imports the modules of --plugin before the full parser is built, so that the structure
    configs they register add their flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    for name in known.plugin:
        try:
            importlib.import_module(name)
        except ImportError as error:
            print(f"{PROG}: error: --plugin {name}: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `autoshuffle-train`; returns the exit status (0 on success, 2 for bad
    flags, data, checkpoints or a file system that refuses a write, 1 when training
    diverged)."""
    _import_plugins(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = _validate(args)
    if problems:
        parser.error("; ".join(problems))
    try:
        _config(args, None, None)  # the flags' values, checked by the configs they make
    except ConfigError as error:
        parser.error(str(error))
    try:
        return run(args, parser)
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
