"""One training run: SGD with warm-up + cosine, the scheduled penalty, projection after each step,
a checkpoint per epoch, and at the end rounding and evaluation of the soft and frozen models.

Precision (`--amp`): the model's forward and the task loss run under autocast (bfloat16, or
float16 with a gradient scaler on CUDA); the parameters, their gradients and the optimizer stay
float32, and so do the learned structures' exact parts: the penalties (P(M) and its gradient,
computed from the float32 M), the projection after each step and the rounding of `freeze`.
Evaluation always runs the float32 model, the one `freeze` deploys. `--compile` compiles the
model for the training steps (`torch.compile`; under DDP, the module DDP wraps); the penalties,
the optimizer step and evaluation stay eager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import modules as asx_modules
from ..lipschitz import certify, lipschitz_bound, margin_for_radius, multiclass_hinge_loss
from ..models import build_model, measure
from .checkpoint import FORMAT, atomic_save, capture_rng, load_checkpoint, restore_rng
from .config import LATER_FIELDS, TrainConfig
from .data import (
    DataSplits,
    eval_indices,
    iterate_batches,
    normalize,
    random_crop,
    random_flip,
    train_indices,
)
from .distributed import DistContext, all_reduce_sum, assert_same_on_all_ranks
from .errors import CheckpointError, ConfigError, NonFiniteLossError, naming_file
from .metrics import atomic_write_text, strict_json, write_metrics
from .report import write_run_report
from .result import RunResult
from .schedules import WarmupCosine, penalty_scale_at

__all__ = ["autocast", "check_precision", "resolve_config", "run_training", "task_loss"]

CHECKPOINT = "checkpoint.pt"


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
    margin: float | None = None,
) -> torch.Tensor:
    """Cross-entropy of the classifier, or with `margin` the multi-class hinge loss (mean over
    the batch)."""
    if margin is not None:
        return multiclass_hinge_loss(logits, labels, margin)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _margin(config: TrainConfig) -> float | None:
    """The hinge loss's margin: sqrt(2) * --certify (None for cross-entropy)."""
    return margin_for_radius(config.certify) if config.loss == "hinge" else None


def input_lipschitz(model: nn.Module, data: DataSplits) -> float:
    """A bound on the Lipschitz constant (l2) of the logits in the images' 0-1 pixel scale: the
    model's bound times that of the normalisation, 1 / (smallest channel std)."""
    return lipschitz_bound(model) / float(data.std.min())


def resolve_config(config: TrainConfig, data: DataSplits) -> TrainConfig:
    """`config` with the dataset's defaults filled in where it says None."""
    return dataclasses.replace(
        config,
        stem=config.stem or data.stem,
        image_size=config.image_size or data.image_size,
        flip=data.flip if config.flip is None else config.flip,
        crop_padding=data.crop_padding if config.crop_padding is None else config.crop_padding,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds third-party code that uses the global RNG)
    torch.manual_seed(seed)


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation RNG of one (seed, epoch, rank): resuming at an epoch boundary replays it."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on conv/fc weights only: not on BatchNorm or biases. The learned
    structures' parameters go where their hints say (`LearnedStructure.param_groups`: a group
    per name and learning rate, usually without decay)."""
    hinted: dict[tuple, dict] = {}
    taken: set[int] = set()
    for _, module in asx_modules.structures(model):
        for hint in module.param_groups():
            lr = config.lr if hint.lr is None else hint.lr
            group = hinted.setdefault(
                (hint.name, lr, hint.weight_decay),
                {
                    "params": [],
                    "weight_decay": hint.weight_decay,
                    "lr": lr,
                    "name": hint.name,
                    "own_lr": hint.lr is not None,  # set by its flag, --<name>-lr
                },
            )
            for p in hint.params:
                if id(p) not in taken:
                    taken.add(id(p))
                    group["params"].append(p)
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) not in taken:
            (decay if p.dim() > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return groups + [g for g in hinted.values() if g["params"]]


def _sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Rank 0's BatchNorm statistics everywhere, so that every rank evaluates (and rank 0 saves)
    the same model."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def memory_format(config: TrainConfig) -> torch.memory_format:
    """The memory format of the model's weights and of every batch."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(config: TrainConfig, device: torch.device) -> None:
    """Raises ConfigError unless `config.amp` runs on `device`: float16 needs CUDA (its gradient
    scaler is CUDA's), bfloat16 a CUDA device that supports it (any CPU does; oneDNN uses AVX-512
    BF16 or AMX where present and converts otherwise)."""
    if config.amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"--amp fp16 needs CUDA (float16 autocast with a gradient scaler), not {device}; "
            "on the CPU use --amp bf16"
        )
    if config.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp bf16: {device} does not support bfloat16; use --amp fp16")


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of `config.amp` on `device` (a no-op for "off")."""
    if config.amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[config.amp])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    device: torch.device,
    ctx: DistContext,
) -> tuple[float, float, float | None]:
    """(mean task loss, accuracy, accuracy certified at `config.certify` or None) of `model` on
    the validation split, over all ranks. Certified: the true logit beats every other by more
    than sqrt(2) L eps, with L the model's Lipschitz bound in pixel scale (`input_lipschitz`)."""
    was_training = model.training
    model.eval()
    bound = None if config.certify is None else input_lipschitz(model, data)
    total_loss = correct = certified = count = 0.0
    margin = _margin(config)
    indices = eval_indices(data.val, ctx.rank, ctx.world)
    for i, (images, labels) in enumerate(
        iterate_batches(data.val, indices, config.batch_size, False, config.workers)
    ):
        if config.limit_batches is not None and i >= config.limit_batches:
            break
        x = normalize(images, data.mean, data.std)
        x = x.to(device, memory_format=memory_format(config))
        labels = labels.to(device)
        logits = model(x)
        if margin is None:
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        else:
            total_loss += multiclass_hinge_loss(logits, labels, margin).item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        if bound is not None:
            certified += certify(logits, config.certify, labels, bound).sum().item()
        count += labels.numel()
    model.train(was_training)
    total_loss, correct, certified, count = all_reduce_sum(
        [total_loss, correct, certified, count], ctx, device
    )
    count = max(count, 1)
    return total_loss / count, correct / count, None if bound is None else certified / count


def _structure_summary(model: nn.Module) -> tuple[list[dict], float | None, float | None]:
    """Every learned structure's report row, and their unweighted penalties (P(M) of the learned
    shuffles...) and distances to their exact forms, each summed (None without any)."""
    layers = asx_modules.structure_report(model)  # one rounding per shuffle, not two
    if not layers:
        return layers, None, None
    distances = [r["distance"] for r in layers if r.get("distance") is not None]
    distance = sum(distances) if distances else None
    return layers, sum(r["penalty"] for r in layers), distance


def _density(layers: list[dict]) -> float | None:
    """The fraction of non-zero entries over every shuffle matrix (None without any): how
    sparse the mixing has become."""
    rows = [r for r in layers if r.get("density") is not None]
    if not rows:
        return None
    sizes = [r["channels"] ** 2 for r in rows]
    return sum(r["density"] * n for r, n in zip(rows, sizes, strict=True)) / sum(sizes)


class _Run:
    """The state of one run between epochs; `train()` drives it to the end."""

    def __init__(
        self,
        config: TrainConfig,
        data: DataSplits,
        out_dir: Path,
        ctx: DistContext,
        device: torch.device,
    ) -> None:
        self.config = config
        self.data = data
        self.out_dir = out_dir
        self.ctx = ctx
        self.device = device
        check_precision(config, device)
        _seed_everything(config.seed)
        model = self._build_model()
        if config.certify is not None:
            try:
                input_lipschitz(model, data)
            except TypeError as error:
                raise ConfigError(
                    f"--certify needs a Lipschitz bound of the model: {error}"
                ) from None
        self.model = model.to(device, memory_format=memory_format(config))
        self.optimizer = torch.optim.SGD(
            _param_groups(model, config),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
        )
        self._build_schedule()
        # Before the projection hook: it cannot project an M that an update overflowed.
        self.optimizer.register_step_post_hook(self._check_structures)
        asx_modules.attach_projection(self.optimizer, model)
        # float16 needs its loss scaled so that small gradients do not flush to zero; bfloat16
        # has float32's exponent range and does not.
        self.scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
        self.net: nn.Module = torch.compile(model) if config.compile else model
        if ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)
        self.epoch = 0
        self.saved_epoch = 0  # the epoch of the checkpoint on disk
        self.step = 0
        self.history: list[dict] = []

    def _build_model(self) -> nn.Module:
        """The model of `config`, converted by its structures, which draw from their own seeded
        generator (so every variant of a comparison starts with the same conv weights from the
        global RNG)."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed)
        try:
            return build_model(
                config.model,
                self.data.num_classes,
                config.stem,
                config.structures,
                generator,
                config.image_size,
            )
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _build_schedule(self) -> None:
        """Steps per epoch and in all, and the warm-up + cosine learning-rate schedule."""
        config, ctx = self.config, self.ctx
        per_rank = math.ceil(len(self.data.train) / ctx.world)
        if per_rank < config.batch_size:
            raise ConfigError(
                f"--batch-size {config.batch_size} exceeds the {per_rank} training images each "
                f"of {ctx.world} process(es) gets; lower it"
            )
        self.steps_per_epoch = per_rank // config.batch_size
        if config.limit_batches is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.limit_batches)
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(self.total_steps, warmup)
        )

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def identity(self) -> dict:
        return {**self.config.identity(), "num_classes": self.data.num_classes}

    def save(self) -> None:
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never replace a good checkpoint with a broken state
            raise NonFiniteLossError(
                f"non-finite parameters after epoch {self.epoch} ({', '.join(bad[:3])}...); "
                f"{self.checkpoint_path} keeps the last good state"
            )
        state = {
            "format": FORMAT,
            "identity": self.identity(),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "history": self.history,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        atomic_save(state, self.checkpoint_path)
        self.saved_epoch = self.epoch

    def load(self) -> None:
        """Restores the run from its checkpoint.

        Raises:
            CheckpointError: a checkpoint of another configuration, or one whose parts do not
                fit this run (missing entries, tensors of other shapes).
        """
        identity = self.identity()
        state = load_checkpoint(
            self.checkpoint_path, {k: v for k, v in identity.items() if k not in LATER_FIELDS}
        )
        # A checkpoint written before a field existed trained with its LATER_FIELDS value.
        saved = state.get("identity", {})
        diffs = [
            f"{key}: checkpoint {saved.get(key, old)!r}, now {identity[key]!r}"
            for key, old in LATER_FIELDS.items()
            if saved.get(key, old) != identity[key]
        ]
        if diffs:
            raise CheckpointError(
                f"{self.checkpoint_path}: checkpoint belongs to another configuration "
                f"({'; '.join(diffs)}); resume with the same flags or choose another --out"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            restore_rng(state["rng"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.saved_epoch = self.epoch
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CheckpointError(
                f"{self.checkpoint_path}: checkpoint does not fit this run "
                f"({type(error).__name__}: {first}); choose another --out or delete it"
            ) from None

    # -- training ----------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message)

    def _batch(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        config = self.config
        images = random_crop(images, config.crop_padding, generator)
        if config.flip:
            images = random_flip(images, generator)
        images = normalize(images, self.data.mean, self.data.std)
        return images.to(self.device, memory_format=memory_format(config))

    def _check_finite(self, loss: torch.Tensor, task: torch.Tensor, pen: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.ctx.enabled:  # every rank must stop together, or the others hang in all-reduce
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() == 1.0:
            return
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.epoch + 1}, step {self.step + 1} (task loss "
            f"{task.item():.4g}, penalty {pen.item():.4g}); {self._kept()}; try a lower --lr "
            "or --penalty-weight"
        )

    def _check_structures(self, _optimizer, _args, _kwargs) -> None:
        """After each step: raises NonFiniteLossError, naming the learning-rate flag of the
        parameter group, when an update overflowed a structure parameter (a shuffle matrix, a
        gate) to inf or NaN."""
        groups = [g for g in self.optimizer.param_groups if "name" in g]
        params = [(p, g) for g in groups for p in g["params"]]
        if not params:
            return
        finite = torch.stack([torch.isfinite(p).all() for p, _ in params]).tolist()
        bad = [(p, g) for (p, g), ok in zip(params, finite, strict=True) if ok is False]
        if not bad:
            return
        names = {id(p): n for n, p in self.model.named_parameters()}
        group = bad[0][1]
        flag = f"--{group['name']}-lr" if group["own_lr"] else "--lr"
        lr = group.get("initial_lr", group["lr"])  # the peak, before the schedule
        raise NonFiniteLossError(
            f"non-finite structure parameters after epoch {self.epoch + 1}, step {self.step + 1} "
            f"({', '.join(names.get(id(p), '?') for p, _ in bad[:3])}): the update overflowed; "
            f"{self._kept()}; try a lower {flag} (got {lr:g})"
        )

    def _kept(self) -> str:
        """What a stopped run leaves behind."""
        if self.checkpoint_path.exists():
            return f"{self.checkpoint_path} (epoch {self.saved_epoch}) is kept unchanged"
        return "no checkpoint had been written yet"

    def _step(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One optimizer step; returns (logits, task loss, penalty, penalty scale)."""
        config = self.config
        with autocast(config, self.device):
            logits = self.net(x)
        # The loss from float32 logits (autocast would compute it in float32 anyway).
        task = task_loss(logits.float(), labels, config.label_smoothing, _margin(config))
        # Each structure weighs its own penalty (its config's lambda); the schedule only scales
        # all of them.
        scale = penalty_scale_at(
            self.step,
            self.total_steps,
            config.penalty_schedule,
            config.penalty_start,
            config.penalty_ramp,
        )
        # Outside autocast, from the float32 parameters: exactly the float32 run's penalties (a
        # learned shuffle's P(M) was computed in float32 by its forward even under autocast).
        pen = asx_modules.penalty(self.model)
        loss = task + scale * pen
        self._check_finite(loss, task, pen)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()  # the projection hook runs here
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # unscales; skips a step with inf/NaN gradients
            self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return logits, task, pen, scale

    def train_epoch(self) -> dict:
        config, ctx = self.config, self.ctx
        self.net.train()
        generator = _epoch_generator(config.seed, self.epoch, ctx.rank)
        indices = train_indices(self.data.train, self.epoch, config.seed, ctx.rank, ctx.world)
        batches = iterate_batches(self.data.train, indices, config.batch_size, True, config.workers)
        sums = {"loss": 0.0, "penalty": 0.0, "correct": 0.0, "count": 0.0}
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"{config.variant} {self.epoch + 1}/{config.epochs}",
            disable=not (config.progress and ctx.is_main) or None,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        for i, (images, labels) in enumerate(batches):
            if i >= self.steps_per_epoch:
                break
            labels = labels.to(self.device)
            logits, task, pen, scale = self._step(self._batch(images, generator), labels)
            n = labels.numel()
            sums["loss"] += task.item() * n
            sums["penalty"] += pen.item() * n
            sums["correct"] += (logits.argmax(1) == labels).sum().item()
            sums["count"] += n
            bar.update()
            bar.set_postfix(
                loss=f"{sums['loss'] / sums['count']:.3f}",
                acc=f"{sums['correct'] / sums['count']:.3f}",
                pen=f"{pen.item():.3g}",
                refresh=False,
            )
        bar.close()
        elapsed = time.perf_counter() - start
        loss, pen, correct, count = all_reduce_sum(
            [sums["loss"], sums["penalty"], sums["correct"], sums["count"]], ctx, self.device
        )
        return {
            "train_loss": loss / count,
            "train_acc": correct / count,
            "lr": self.optimizer.param_groups[0]["lr"],
            "penalty_scale": scale,
            "epoch_time": elapsed,
        }

    def train(self) -> RunResult | None:
        """Trains to `config.epochs` (or `stop_after_epochs` more); None if stopped early."""
        config = self.config
        done_here = 0
        while self.epoch < config.epochs:
            if config.stop_after_epochs is not None and done_here >= config.stop_after_epochs:
                self._log(
                    f"[{config.variant}] stopped after epoch {self.epoch} (--stop-after-epochs)"
                )
                return None
            row = self.train_epoch()
            self.epoch += 1
            done_here += 1
            _sync_buffers(self.model, self.ctx)
            val_loss, val_acc, val_certified = evaluate(
                self.model, self.data, config, self.device, self.ctx
            )
            if not math.isfinite(val_loss):
                raise NonFiniteLossError(
                    f"non-finite validation loss after epoch {self.epoch} ({val_loss}); "
                    f"{self._kept()}; try a lower --lr or --penalty-weight"
                )
            layers, penalty, distance = _structure_summary(self.model)
            row = {"epoch": self.epoch, **row, "val_loss": val_loss, "val_acc": val_acc}
            if config.certify is not None:
                row["val_certified_acc"] = val_certified
            row |= {"penalty": penalty, "distance": distance, "density": _density(layers)}
            self.history.append(row)
            if self.ctx.is_main:
                self.save()
                write_metrics(self.out_dir, self.history)
            self._log(
                f"[{config.variant}] epoch {self.epoch}/{config.epochs} "
                f"loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} "
                f"val_acc {val_acc:.4f}"
                + ("" if val_certified is None else f" certified {val_certified:.4f}")
                + ("" if penalty is None else f" P(M) {penalty:.4g}")
                + ("" if distance is None else f" dist {distance:.3g}")
                + f" ({row['epoch_time']:.1f}s)"
            )
        return self.finish()

    def finish(self) -> RunResult:
        """Freezes the structures, evaluates soft and frozen models, checks the ranks agree."""
        config, ctx = self.config, self.ctx
        names = {id(p): n for n, p in self.model.named_parameters()}
        learned = {
            names[id(p)]: p.detach()
            for _, m in asx_modules.structures(self.model)
            for p in m.structure_parameters()
        }
        assert_same_on_all_ranks(learned, ctx)
        _sync_buffers(self.model, ctx)
        _, soft_acc, soft_certified = evaluate(self.model, self.data, config, self.device, ctx)
        frozen = asx_modules.freeze(self.model)
        _, frozen_acc, frozen_certified = evaluate(frozen, self.data, config, self.device, ctx)
        layers, penalty, distance = _structure_summary(self.model)
        times = [row["epoch_time"] for row in self.history]
        # Measured now, not at the start: learned group counts change the inference form.
        c = measure(self.model, (3, config.image_size, config.image_size))
        result = RunResult(
            variant=config.variant,
            seed=config.seed,
            soft_acc=soft_acc,
            frozen_acc=frozen_acc,
            params=c.params,
            shuffle_params=c.shuffle_params,
            macs=c.macs,
            shuffle_macs=c.shuffle_macs,
            time_per_epoch=sum(times) / max(len(times), 1),
            final_penalty=penalty,
            final_distance=distance,
            soft_certified_acc=soft_certified,
            frozen_certified_acc=frozen_certified,
            epochs=self.epoch,
            out_dir=str(self.out_dir),
            history=self.history,
            layers=layers,
            model=self.model,
        )
        if ctx.is_main:
            with naming_file(self.out_dir / "model_frozen.pt"):
                torch.save(frozen.state_dict(), self.out_dir / "model_frozen.pt")
            summary = {
                f.name: getattr(result, f.name)
                for f in dataclasses.fields(result)
                if f.name not in ("history", "model")
            }
            summary["config"] = config.to_dict()
            atomic_write_text(self.out_dir / "result.json", strict_json(summary))
            write_run_report(self.out_dir, config, result, self.model)
        self._log(
            f"[{config.variant}] soft acc {soft_acc:.4f}, frozen acc {frozen_acc:.4f}"
            + (
                ""
                if frozen_certified is None
                else f", certified at {config.certify:g}: soft {soft_certified:.4f}, "
                f"frozen {frozen_certified:.4f}"
            )
            + ("" if penalty is None else f", P(M) {penalty:.4g}")
        )
        return result


def run_training(
    config: TrainConfig,
    data: DataSplits,
    out_dir: str | Path,
    ctx: DistContext,
    device: torch.device,
    resume: bool = False,
) -> RunResult | None:
    """Trains one configuration in `out_dir` (its run directory) and returns its result, or None
    when `config.stop_after_epochs` stopped it before the end (resume it later).

    Raises:
        ConfigError: unknown model or flags that do not fit, or a run directory that already
            holds a checkpoint while `resume` is False.
        CheckpointError: `resume` with a checkpoint of another configuration.
        NonFiniteLossError: the loss became NaN/inf (the last checkpoint is left untouched).
    """
    config = resolve_config(config, data)
    out_dir = Path(out_dir)
    run = _Run(config, data, out_dir, ctx, device)
    if run.checkpoint_path.exists():
        if not resume:
            raise ConfigError(
                f"{out_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it or "
                "choose another --out"
            )
        run.load()
        run._log(f"[{config.variant}] resumed from {run.checkpoint_path} at epoch {run.epoch}")
    elif resume:
        run._log(f"[{config.variant}] no checkpoint in {out_dir}: starting from epoch 0")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    return run.train()
