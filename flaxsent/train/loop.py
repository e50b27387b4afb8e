"""`flaxsent train`: fine-tune a DistilBERT classifier, the model card's recipe by default.

The run: read and tokenize the labelled file, then for each optimizer step take the next
`batch_size` examples of the epoch's shuffled order, pack them (`StepPlan`) and update
(`TrainStep`). The train state (params, optimizer state, step; the data order and dropout keys
follow from the seed and the step) is saved with orbax every `save_every` steps and at each
epoch's end; `resume` continues from the last save and ends with the weights an uninterrupted run
ends with. The output folder is an ordinary flaxsent checkpoint, plus `metrics.jsonl`,
`curves.png`, `run.json` (what the run depends on) and `train_state/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.classifier import default_precision
from flaxsent.core.plan import StepPlan
from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.errors import TrainError
from flaxsent.evaluate.labelled import iter_labelled
from flaxsent.io import durable
from flaxsent.io import run_record as fingerprint
from flaxsent.train.log import TrainLog, plot_curves
from flaxsent.train.recipe import Recipe, TrainOptions
from flaxsent.train.step import TrainStep

RUN_INFO = "run.json"
STATE_DIR = "train_state"


@dataclasses.dataclass
class TrainResult:
    """Where the run ended: steps, the last loss, the last evaluation, wall time, shapes."""

    out: Path
    steps: int
    examples: int
    final_loss: float
    eval_metrics: dict[str, Any] | None
    seconds: float
    resumed_from: int
    compiled_shapes: list[tuple[int, int, int]]  # the step shapes this process compiled
    plan_shapes: list[Any]  # every shape a step can take (plan.Shape)


def train(opts: TrainOptions) -> TrainResult:
    """Run (or resume) a training run; see the module docstring."""
    started = time.perf_counter()
    opts.check()
    out = Path(opts.out).expanduser()
    source = ckpt.resolve_source(opts.model)
    _prepare_out(out, opts)
    with tempfile.TemporaryDirectory(prefix="flaxsent-train-") as tmp:
        start_folder = _start_checkpoint(source, opts, Path(tmp))
        run_info = _run_info(opts, source, start_folder)
        _check_or_record(out, run_info, opts.resume)
        cfg = ckpt.read_config(start_folder)
        if opts.label_names:
            if len(opts.label_names) != cfg.num_labels:
                raise TrainError(f"--label-names gives {len(opts.label_names)} names for a "
                                 f"{cfg.num_labels}-label model")
            cfg = cfg.replace(labels=tuple(opts.label_names))
        tokenizer = TextTokenizer.from_folder(start_folder).with_max_length(
            min(opts.max_length, cfg.max_position_embeddings))
        model = ckpt.load_model(start_folder, dtype=opts.dtype, param_dtype="float32")
        ids, labels = _read_examples(opts.data, tokenizer, cfg.labels, opts)
        trainer = _Run(opts, out, model, tokenizer, cfg, ids, labels)
        result = trainer.run()
    result.seconds = time.perf_counter() - started
    return result


class _Run:
    """One training run's state and loop."""

    def __init__(self, opts: TrainOptions, out: Path, model, tokenizer: TextTokenizer, cfg,
                 ids: list[np.ndarray], labels: np.ndarray):
        self.opts, self.out, self.tokenizer, self.cfg = opts, out, tokenizer, cfg
        self.model, self.ids, self.labels = model, ids, labels
        n = len(ids)
        if n < opts.batch_size:
            raise TrainError(f"--data {opts.data}: {n} example(s), fewer than one batch of "
                             f"{opts.batch_size}: lower --batch-size or give more data")
        self.steps_per_epoch = -(-n // opts.batch_size)
        self.total = opts.max_steps or opts.epochs * self.steps_per_epoch
        recipe = Recipe(learning_rate=opts.learning_rate, warmup_steps=opts.warmup_steps,
                        total_steps=self.total, weight_decay=opts.weight_decay,
                        max_grad_norm=opts.max_grad_norm, grad_accum=opts.grad_accum)
        self.step_fn = TrainStep(model, recipe, devices=opts.devices, dropout=opts.dropout,
                                 precision=default_precision(opts.dtype))
        self.plan = StepPlan.build(tokenizer.max_length, opts.batch_size // opts.grad_accum,
                                   self.step_fn.n_devices, packed=opts.packed)
        self.schedule = recipe.schedule()
        self.key = jax.random.key(opts.seed)

    def order(self, epoch: int) -> np.ndarray:
        """The examples of an epoch in training order: shuffled by (seed, epoch), or as read."""
        n = len(self.ids)
        if not self.opts.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.opts.seed, epoch]).permutation(n)

    def step_examples(self, step: int) -> np.ndarray:
        """The example indices of optimizer step `step` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        bs = self.opts.batch_size
        return self.order(epoch)[k * bs:(k + 1) * bs]

    def run(self) -> TrainResult:
        import orbax.checkpoint as ocp
        params, opt_state = self.step_fn.init(self.model)
        manager = ocp.CheckpointManager(
            (self.out / STATE_DIR).resolve(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                 enable_async_checkpointing=False))
        start = 0
        if self.opts.resume and manager.latest_step() is not None:
            start = int(manager.latest_step())
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (params, opt_state))
            params, opt_state = manager.restore(start, args=ocp.args.StandardRestore(abstract))
            params, opt_state = jax.device_put((params, opt_state), self.step_fn.replicated)
        self._save_config()
        TrainLog.truncate_after(self.out, start)
        log = TrainLog(self.out, tensorboard=self.opts.tensorboard)
        bar = _progress(self.total, start, self.opts.progress)
        last_loss, last_eval = math.nan, None
        try:
            for step in range(start, self.total):
                tick = time.perf_counter()
                params, opt_state, loss, norm, tokens = self._update(params, opt_state, step)
                if not math.isfinite(loss):
                    # the params that gave it are the last update's: a save of them is bad too
                    if manager.latest_step() == step:
                        manager.delete(step)
                    saved = manager.latest_step()
                    raise TrainError(
                        f"the loss became {loss} at step {step + 1}: stopped. The last good "
                        f"train state is step {saved or 0} in {self.out / STATE_DIR}"
                        + (" (--resume continues from it)" if saved else "")
                        + "; try a lower --learning-rate or --dtype float32")
                last_loss = loss
                seconds = time.perf_counter() - tick
                n = len(self.step_examples(step))
                log.write({"kind": "step", "step": step + 1, "epoch": step // self.steps_per_epoch,
                           "loss": loss, "grad_norm": norm,
                           "learning_rate": float(self.schedule(step)),
                           "examples_per_s": n / seconds, "real_tokens_per_s": tokens / seconds})
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{float(self.schedule(step)):.2e}",
                                ex_s=f"{n / seconds:.0f}")
                done = step + 1
                epoch_end = done % self.steps_per_epoch == 0 or done == self.total
                if done % self.opts.save_every == 0 or epoch_end:
                    manager.save(done, args=ocp.args.StandardSave((params, opt_state)))
                if epoch_end and self.opts.eval:
                    last_eval = self._evaluate(params)
                    log.write({"kind": "eval", "step": done,
                               "epoch": (done - 1) // self.steps_per_epoch,
                               **{k: v for k, v in last_eval.items()
                                  if isinstance(v, (int, float)) and v is not None}})
        finally:
            bar.close()
            log.close()
            manager.close()
        self._save_model(params)
        plot_curves(self.out, f"flaxsent train: {Path(self.opts.model).name} on "
                              f"{Path(self.opts.data).name}")
        return TrainResult(out=self.out, steps=self.total, examples=len(self.ids),
                           final_loss=last_loss, eval_metrics=last_eval, seconds=0.0,
                           resumed_from=start, compiled_shapes=self.step_fn.compiled_shapes,
                           plan_shapes=self.plan.shapes())

    def _update(self, params, opt_state, step: int):
        """One optimizer step over its micro-batches: params, state, mean loss, mean gradient
        norm, real tokens."""
        chosen = self.step_examples(step)
        losses, norms, tokens = [], [], 0
        for m, micro in enumerate(np.array_split(chosen, self.opts.grad_accum)):
            batch = self.plan.batch(micro.tolist(), [self.ids[i] for i in micro],
                                    self.tokenizer.pad_id)
            key = jax.random.fold_in(self.key, step * self.opts.grad_accum + m)
            params, opt_state, loss, norm = self.step_fn(params, opt_state, batch,
                                                         self.labels[batch.positions], key)
            losses.append(loss)
            norms.append(norm)
            tokens += batch.real_tokens
        return (params, opt_state, float(np.mean([float(x) for x in losses])),
                float(np.mean([float(x) for x in norms])), tokens)

    def _evaluate(self, params) -> dict[str, Any]:
        """The card's metric set on --eval, through eval's own code."""
        from flaxsent.core.classifier import Classifier
        from flaxsent.evaluate.run import evaluate_file
        model = self.step_fn.model(params)
        clf = Classifier(model, self.tokenizer, devices=self.opts.devices)
        metrics, _, _ = evaluate_file(clf, self.opts.eval, text_column=self.opts.text_column,
                                      label_column=self.opts.label_column)
        return metrics

    def _save_config(self) -> None:
        """config.json and the tokenizer files, written durably once before the first step. They
        are fixed for the whole run (a --resume with other options or another model is refused),
        so the weights, which `_save_model` replaces in one atomic step at the end, never sit
        beside another save's config: after a kill the folder holds this run's config and
        tokenizer with no weights, or with the final ones."""
        durable.write_json(self.out / ckpt.CONFIG, self.cfg.to_hf_dict(), error=TrainError)
        self.tokenizer.save(self.out)

    def _save_model(self, params) -> None:
        """flax_model.safetensors (float32), replaced atomically and durably (see
        `_save_config` for why config.json is not written here)."""
        flat = ckpt.params_of(self.step_fn.model(params))
        with durable.replacing(self.out / ckpt.FLAX_WEIGHTS, error=TrainError) as tmp:
            ckpt.save_flax_weights(tmp, flat)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=not enabled, desc="train")


def _prepare_out(out: Path, opts: TrainOptions) -> None:
    """A fresh folder, a replaced earlier run (--force) or the run to continue (--resume)."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: exists and is not a folder")
    existing = out.is_dir() and any(out.iterdir())
    if opts.resume:
        if not (out / RUN_INFO).is_file():
            raise TrainError(f"--resume: {out} holds no training run to continue (no "
                             f"{RUN_INFO}); start it without --resume")
        return
    if existing and not opts.force:
        raise TrainError(f"--out {out} already exists: pass --resume to continue its run, "
                         "--force to replace it, or choose another folder")
    if existing:
        if not (out / RUN_INFO).is_file():
            raise TrainError(f"--force: {out} is not a flaxsent training output (no "
                             f"{RUN_INFO}); refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _start_checkpoint(source: Path, opts: TrainOptions, tmp: Path) -> Path:
    """A flaxsent folder to start from: the source itself, or its conversion (a fresh head with
    --num-labels when the source has none)."""
    if ckpt.checkpoint_kind(source) == "flax":
        cfg = ckpt.read_config(source)
        if opts.num_labels is not None and opts.num_labels != cfg.num_labels:
            raise TrainError(f"{opts.model} already has a {cfg.num_labels}-label head; "
                             "--num-labels only applies to checkpoints without one")
        return source
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    convert_checkpoint(source, tmp / "start", num_labels=opts.num_labels, seed=opts.seed)
    return tmp / "start"


def _run_info(opts: TrainOptions, source: Path, start: Path) -> dict[str, Any]:
    info = {"options": opts.depends_on(), "model": fingerprint.model_identity(source),
            "data": fingerprint.file_identity(opts.data)}
    if opts.eval:
        info["eval"] = fingerprint.file_identity(opts.eval)
    return info


def _check_or_record(out: Path, info: dict[str, Any], resume: bool) -> None:
    """On --resume, refuse a run that differs from the recorded one (a missing, torn or foreign
    run.json is one line too); else record this one durably (`run_record.check_or_record`)."""
    fingerprint.check_or_record(
        out / RUN_INFO, info, resume=resume, error=TrainError, wrote=out,
        compare=_run_differences,
        refusal=lambda diff: f"--resume: this run differs from the one in {out}: {diff}. Rerun "
        "with the same options and files, or start afresh with --force")


def _run_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each option that changed ('name: old -> new'), then each file that did."""
    options = recorded.get("options")
    return fingerprint.differences(options if isinstance(options, dict) else {},
                                   current["options"]) + [
        f"{k} file changed" for k in ("model", "data", "eval")
        if json.dumps(recorded.get(k), sort_keys=True) != json.dumps(current.get(k),
                                                                     sort_keys=True)]


def _read_examples(path: str, tokenizer: TextTokenizer, label_names: tuple[str, ...],
                   opts: TrainOptions) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids (truncated to max_length) and class ids of every row of the training file."""
    if not Path(path).is_file():
        raise TrainError(f"--data {path}: no such file")
    texts, labels = [], []
    for text, label in iter_labelled(path, label_names, text_column=opts.text_column,
                                     label_column=opts.label_column):
        texts.append(text)
        labels.append(label)
    if not texts:
        raise TrainError(f"--data {path}: holds no labelled examples")
    ids: list[np.ndarray] = []
    for start in range(0, len(texts), 4096):
        chunk, _ = tokenizer.encode_batch(texts[start:start + 4096], truncation=True,
                                          offset=start)
        ids.extend(np.asarray(x, np.int32) for x in chunk)
    return ids, np.asarray(labels, np.int32)
