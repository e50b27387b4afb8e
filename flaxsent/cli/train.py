"""`flaxsent train`: fine-tune a classifier. Every default is `TrainOptions`' (the recipe's are
the model card's, `flaxsent.train.recipe.CARD`), and the options are built from the parsed
arguments field by field."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flaxsent.cli.common import defaults_of, number, options_from
from flaxsent.train.recipe import TrainOptions

D = defaults_of(TrainOptions)
# TrainOptions field -> the flag that turns it off (its default is on)
NEGATED = {"dropout": "no_dropout", "shuffle": "no_shuffle", "packed": "no_packing",
           "progress": "no_progress"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="fine-tune a classifier (the model card's recipe by default), packed",
        description="Fine-tune a DistilBERT classifier on a labelled file with optax: AdamW, "
                    "linear warm-up and decay, texts packed several to a row.")
    p.add_argument("--model", "-m", required=True,
                   help="converted flaxsent folder, HF folder or Hub id (a masked-LM checkpoint "
                        "needs --num-labels)")
    p.add_argument("--data", required=True,
                   help="training file with a label column: SST-2 TSV (sentence<TAB>label), "
                        "CSV, JSONL or Parquet")
    p.add_argument("--out", required=True, help="output folder: a flaxsent checkpoint, plus "
                                                "metrics.jsonl, curves.png and train_state/")
    p.add_argument("--eval", default=D.eval, help="labelled file scored at each epoch's end")
    p.add_argument("--num-labels", type=int, default=D.num_labels,
                   help="a fresh N-label head on a checkpoint without one")
    p.add_argument("--label-names", default=None, metavar="A,B,...",
                   help="names of the labels in the output (default: the model's)")
    p.add_argument("--text-column", default=D.text_column,
                   help="column holding the text (default: text, else sentence)")
    p.add_argument("--label-column", default=D.label_column, help="column holding the label")
    r = p.add_argument_group("the recipe (defaults: the model card's)")
    r.add_argument("--learning-rate", type=float, default=D.learning_rate,
                   help=f"peak (default {number(D.learning_rate)})")
    r.add_argument("--batch-size", type=int, default=D.batch_size,
                   help=f"examples a step (default {D.batch_size})")
    r.add_argument("--warmup-steps", type=int, default=D.warmup_steps,
                   help=f"linear warm-up from 0 (default {D.warmup_steps}), then linear decay "
                        "to 0")
    r.add_argument("--epochs", type=int, default=D.epochs,
                   help=f"passes over --data (default {D.epochs})")
    r.add_argument("--max-steps", type=int, default=D.max_steps,
                   help="stop after N steps; then also the schedule's length")
    r.add_argument("--max-length", type=int, default=D.max_length,
                   help=f"truncate examples to N tokens (default {D.max_length})")
    r.add_argument("--weight-decay", type=float, default=D.weight_decay,
                   help="AdamW decay, never on biases or LayerNorm "
                        f"(default {number(D.weight_decay)})")
    r.add_argument("--max-grad-norm", type=float, default=D.max_grad_norm,
                   help=f"clip the gradient's global norm (default {D.max_grad_norm}, as "
                        "transformers' Trainer; 0 turns it off)")
    r.add_argument("--seed", type=int, default=D.seed,
                   help=f"data order, dropout and a fresh head: 0 to 2**32-1 (default {D.seed})")
    r.add_argument("--grad-accum", type=int, default=D.grad_accum,
                   help=f"split each step into N micro-batches (default {D.grad_accum})")
    r.add_argument("--dtype", default=D.dtype, choices=["float32", "bfloat16"],
                   help="compute dtype; master weights stay float32")
    r.add_argument("--no-dropout", action="store_true", help="train without dropout")
    r.add_argument("--no-shuffle", action="store_true", help="keep the file's order")
    r.add_argument("--no-packing", action="store_true",
                   help="one example a row, padded to --max-length (slower; for comparison)")
    p.add_argument("--save-every", type=int, default=D.save_every,
                   help="save the train state every N steps (and at each epoch's end)")
    p.add_argument("--devices", type=int, default=D.devices,
                   help="train data-parallel on the first N local devices (default: all)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last saved state")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files (needs flaxsent[tensorboard])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)
    return p


def options(args: argparse.Namespace) -> TrainOptions:
    """The run's options: every field from its flag; the negated flags, --label-names A,B and
    --max-grad-norm 0 (off) converted."""
    names = tuple(n.strip() for n in args.label_names.split(",")) if args.label_names else None
    return options_from(TrainOptions, args, label_names=names,
                        max_grad_norm=args.max_grad_norm or None,
                        **{field: not getattr(args, flag) for field, flag in NEGATED.items()})


def run(args: argparse.Namespace) -> int:
    from flaxsent.train.loop import train
    result = train(options(args))
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}", file=sys.stderr)
    accuracy = (result.eval_metrics or {}).get("accuracy")
    print(f"trained {result.steps} step(s) on {result.examples} example(s) in "
          f"{result.seconds:.0f} s; last loss {result.final_loss:.4f}"
          + (f", eval accuracy {accuracy:.4f}" if accuracy is not None else "")
          + f" -> {result.out}", file=sys.stderr)
    return 0
