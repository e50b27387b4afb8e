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

import contextlib
import dataclasses
import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.classifier import default_precision
from flaxsent.core.plan import StepPlan
from flaxsent.core.tokenizer import TOKENIZER_FILES, TextTokenizer
from flaxsent.errors import CheckpointError, TrainError, WriteError
from flaxsent.evaluate.labelled import read_labelled
from flaxsent.io import durable
from flaxsent.io import run_record as fingerprint
from flaxsent.train.log import CURVES, METRICS, TENSORBOARD, TrainLog, plot_curves
from flaxsent.train.recipe import Recipe, TrainOptions
from flaxsent.train.step import TrainStep

RUN_INFO = "run.json"
STATE_DIR = "train_state"
# what a training run writes in --out; --force removes these and nothing else
OWN_FILES = frozenset({RUN_INFO, STATE_DIR, ckpt.CONFIG, ckpt.FLAX_WEIGHTS, METRICS, CURVES,
                       TENSORBOARD, *TOKENIZER_FILES})


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
    """Run (or resume) a training run; see the module docstring. Every option and input file is
    checked before the first write: a refused run leaves `--out` as it was."""
    started = time.perf_counter()
    opts.check()
    out = Path(opts.out).expanduser()
    source = ckpt.resolve_source(opts.model)
    _check_out(out, source, opts)
    with tempfile.TemporaryDirectory(prefix="flaxsent-train-") as tmp:
        start_folder = _start_checkpoint(source, opts, Path(tmp))
        cfg = ckpt.read_config(start_folder)
        if opts.label_names:
            if len(opts.label_names) != cfg.num_labels:
                raise TrainError(f"--label-names gives {len(opts.label_names)} names for a "
                                 f"{cfg.num_labels}-label model")
            cfg = cfg.replace(labels=tuple(opts.label_names))
        tokenizer = TextTokenizer.from_folder(start_folder).with_max_length(
            min(opts.max_length, cfg.max_position_embeddings))
        ids, labels = _read_examples("--data", opts.data, tokenizer, cfg.labels, opts)
        if opts.eval:  # scored at each epoch's end: its labels and texts are checked now
            _read_examples("--eval", opts.eval, tokenizer, cfg.labels, opts)
        model = ckpt.load_model(start_folder, dtype=opts.dtype, param_dtype="float32")
        trainer = _Run(opts, out, model, tokenizer, cfg, ids, labels)
        run_info = _run_info(opts, source)
        if not opts.resume:  # every input is usable: the first write
            _clear_out(out)
        _check_or_record(out, run_info, opts.resume)
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
        self.manager = None  # the train state's orbax CheckpointManager, once `run` opens it

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
        state_dir = (self.out / STATE_DIR).resolve()
        with self._storing(state_dir, tensorstore=True):
            self.manager = ocp.CheckpointManager(
                state_dir, options=ocp.CheckpointManagerOptions(
                    max_to_keep=2, create=True, enable_async_checkpointing=False))
        manager = self.manager
        start = 0
        if self.opts.resume and manager.latest_step() is not None:
            start = int(manager.latest_step())
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (params, opt_state))
            params, opt_state = manager.restore(start, args=ocp.args.StandardRestore(abstract))
            params, opt_state = jax.device_put((params, opt_state), self.step_fn.replicated)
        with self._storing(self.out):
            self._save_config()
        with self._storing(self.out / METRICS):
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
                with self._storing(self.out / METRICS):
                    log.write({"kind": "step", "step": step + 1,
                               "epoch": step // self.steps_per_epoch, "loss": loss,
                               "grad_norm": norm, "learning_rate": float(self.schedule(step)),
                               "examples_per_s": n / seconds,
                               "real_tokens_per_s": tokens / seconds})
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{float(self.schedule(step)):.2e}",
                                ex_s=f"{n / seconds:.0f}")
                done = step + 1
                epoch_end = done % self.steps_per_epoch == 0 or done == self.total
                if done % self.opts.save_every == 0 or epoch_end:
                    with self._storing(state_dir / str(done), tensorstore=True):
                        manager.save(done, args=ocp.args.StandardSave((params, opt_state)))
                if epoch_end and self.opts.eval:
                    last_eval = self._evaluate(params)
                    with self._storing(self.out / METRICS):
                        log.write({"kind": "eval", "step": done,
                                   "epoch": (done - 1) // self.steps_per_epoch,
                                   **{k: v for k, v in last_eval.items()
                                      if isinstance(v, (int, float)) and v is not None}})
            with self._storing(self.out / ckpt.FLAX_WEIGHTS):
                self._save_model(params)
            with self._storing(self.out / CURVES):
                plot_curves(self.out, f"flaxsent train: {Path(self.opts.model).name} on "
                                      f"{Path(self.opts.data).name}")
        finally:
            bar.close()
            log.close()
            manager.close()
        return TrainResult(out=self.out, steps=self.total, examples=len(self.ids),
                           final_loss=last_loss, eval_metrics=last_eval, seconds=0.0,
                           resumed_from=start, compiled_shapes=self.step_fn.compiled_shapes,
                           plan_shapes=self.plan.shapes())

    @contextlib.contextmanager
    def _storing(self, path: Path, *, tensorstore: bool = False) -> Iterator[None]:
        """A storage failure in the block (a full disk, a lost mount: an OSError, a write error
        of flaxsent's writers or safetensors', and with `tensorstore` the ValueErrors orbax's
        tensorstore raises, e.g. OUT_OF_RANGE) as one line naming `path` and saying what
        --resume will do; never a traceback."""
        try:
            with _orbax_logs_held() if tensorstore else contextlib.nullcontext():
                yield
        except (WriteError, CheckpointError) as e:  # already "cannot write PATH: reason"
            raise TrainError(f"{e}; {self._resume_advice()}") from None
        except OSError as e:
            where = e.filename or path
            raise TrainError(f"cannot write {where}: {e.strerror or e}; "
                             f"{self._resume_advice()}") from None
        except ValueError as e:
            if not tensorstore:
                raise
            raise TrainError(f"cannot write {path}: {_first_line(e)}; "
                             f"{self._resume_advice()}") from None

    def _resume_advice(self) -> str:
        """What --resume will do after a failure now: continue from the last complete save, as
        it finds it on disk, or start again."""
        saved = None
        if self.manager is not None:
            with contextlib.suppress(OSError, ValueError):
                self.manager.reload()  # the saves on disk now, as a resumed run lists them
            saved = self.manager.latest_step()
        if saved is None:
            return "no train state was saved yet: --resume starts the run again from step 0"
        return (f"the last complete save is step {saved} in {self.out / STATE_DIR}: --resume "
                "continues from it")

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
        durable.write_json(self.out / ckpt.CONFIG, self.cfg.to_hf_dict())
        self.tokenizer.save(self.out)

    def _save_model(self, params) -> None:
        """flax_model.safetensors (float32), replaced atomically and durably (see
        `_save_config` for why config.json is not written here)."""
        flat = ckpt.params_of(self.step_fn.model(params))
        with durable.replacing(self.out / ckpt.FLAX_WEIGHTS) as tmp:
            ckpt.save_flax_weights(tmp, flat)


def _first_line(error: Exception) -> str:
    """An error's first line without tensorstore's trailing notes ([os_error_code=...],
    [source locations=...])."""
    text = str(error).strip()
    return re.sub(r"( \[[\w ]+=[^\]]*\])+$", "", text.splitlines()[0] if text else
                  type(error).__name__)


@contextlib.contextmanager
def _orbax_logs_held() -> Iterator[None]:
    """Orbax's log records held back during the block and passed on only if it succeeds: a
    failed save is flaxsent's one line, not the traceback orbax's worker thread logs first."""
    logger = logging.getLogger("absl")  # orbax logs through absl's logger
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
    for record in held:
        logger.handle(record)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=not enabled, desc="train")


def _check_out(out: Path, source: Path, opts: TrainOptions) -> None:
    """Refuse an --out no run may write, before anything is read or written: not a folder; the
    --model folder or a folder holding it or the --data or --eval file; an earlier run without
    --resume or --force; --resume where there is no run; --force over files a run never writes
    (another tool's, or a run of flaxsent's own inputs)."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: exists and is not a folder")
    target = out.resolve()
    for flag, path in (("--model", source), ("--data", opts.data), ("--eval", opts.eval)):
        if path is not None and (target == Path(path).resolve() or
                                 target in Path(path).resolve().parents):
            raise TrainError(f"--out {out} is the {flag} {path} or holds it, and a run writes "
                             "(with --force: replaces) what is there: choose another folder")
    if opts.resume:
        if not (out / RUN_INFO).is_file():
            raise TrainError(f"--resume: {out} holds no training run to continue (no "
                             f"{RUN_INFO}); start it without --resume")
        return
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not opts.force:
        raise TrainError(f"--out {out} already exists: pass --resume to continue its run, "
                         "--force to replace it, or choose another folder")
    if not (out / RUN_INFO).is_file():
        raise TrainError(f"--force: {out} is not a flaxsent training output (no "
                         f"{RUN_INFO}); refusing to delete it")
    foreign = sorted(p.name for p in out.iterdir()
                     if (durable.leftover_of(p.name) or p.name) not in OWN_FILES)
    if foreign:
        raise TrainError(f"--force: {out} holds files no training run writes "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                         "refusing to delete them: choose another --out, or move them away")


def _clear_out(out: Path) -> None:
    """An empty --out, the files of an earlier run removed (`_check_out` allowed only those)."""
    try:
        if out.is_dir():
            for entry in out.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"--out {out}: cannot clear or create it "
                         f"({e.strerror or e})") from None


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


def _run_info(opts: TrainOptions, source: Path) -> dict[str, Any]:
    """What the run depends on (run.json): its options and its model and files' identities."""
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


def _read_examples(flag: str, path: str, tokenizer: TextTokenizer,
                   label_names: tuple[str, ...], opts: TrainOptions,
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids (truncated to max_length) and class ids of every row of a labelled file; a
    bad label, or a row with no text to learn from, is refused naming its file and line."""
    if not Path(path).is_file():
        raise TrainError(f"{flag} {path}: no such file")
    rows = read_labelled(path, label_names, text_column=opts.text_column,
                         label_column=opts.label_column)
    if not rows.texts:
        raise TrainError(f"{flag} {path}: holds no labelled examples")
    ids: list[np.ndarray] = []
    for start in range(0, len(rows.texts), 4096):
        chunk, _ = tokenizer.encode_batch(rows.texts[start:start + 4096], truncation=True,
                                          offset=start)
        ids.extend(np.asarray(x, np.int32) for x in chunk)
    # [CLS] [SEP] alone: the text was empty, whitespace or nothing the tokenizer keeps
    empty = [line for line, x in zip(rows.lines, ids, strict=True) if len(x) <= 2]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise TrainError(f"{flag} {path}: {len(empty)} example(s) with no text (empty or only "
                         f"whitespace), {rows.unit}(s) {shown}: a model would learn their label "
                         "from nothing; remove them or give them text")
    return ids, np.asarray(rows.labels, np.int32)
