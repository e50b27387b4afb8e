"""What each `flaxsent` subcommand does with its parsed arguments (cli.py parses them)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any

from flaxsent.errors import FlaxsentError


def run_convert(args: argparse.Namespace) -> int:
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    report = convert_checkpoint(args.src, args.dst, dtype=args.dtype, num_labels=args.num_labels,
                                force=args.force, seed=args.seed)
    print(report.summary(args.dst))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from flaxsent.convert.flax_to_torch import export_checkpoint
    written = export_checkpoint(args.src, args.dst, force=args.force)
    print(f"exported {args.src} -> {args.dst} ({', '.join(written)})")
    return 0


def classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Classifier options `--devices` and `--max-length` set (predict, eval)."""
    options: dict[str, Any] = {}
    if args.devices is not None:
        options["devices"] = args.devices
    if args.max_length is not None:
        options["max_length"] = args.max_length
    return options


def run_predict(args: argparse.Namespace) -> int:
    from flaxsent.errors import PredictError
    from flaxsent.io.readers import STDIO
    from flaxsent.io.writers import output_format
    from flaxsent.predict.run import predict_file, unmap_freed_blocks
    from flaxsent.predict.shards import Shard, finish_part, merge_parts, process_shard
    if args.merge:
        n = merge_parts(args.merge, args.output, force=args.force, csv_safe=args.csv_safe)
        print(f"merged {n} record(s) into {args.output or 'stdout'}", file=sys.stderr)
        return 0
    if args.input is None or args.model is None:
        raise PredictError("predict needs --model M and an INPUT file (or --merge MANIFEST)")
    index, count = process_shard(args.distributed, args.coordinator, args.num_processes,
                                 args.process_id)
    if count > 1:
        if args.output in (None, STDIO):
            raise PredictError("a sharded run needs -o OUTPUT: each process writes "
                               "OUTPUT.part-P-of-N")
        output_format(args.output)  # fail now on an unusable extension

    unmap_freed_blocks()  # from the start: loading and compiling free big blocks too
    from flaxsent.core.classifier import Classifier
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    shard = Shard(index, count, block=clf.window)
    output = shard.part_path(args.output) if count > 1 else args.output
    top_k = args.top_k
    if top_k is not None and top_k > len(clf.labels):
        top_k = None if len(clf.labels) > 1 else 1
    result = predict_file(clf, args.input, output, text_column=args.text_column,
                          input_fmt=args.input_format, top_k=top_k, logits=args.logits,
                          resume=args.resume, force=args.force, on_error=args.on_error,
                          chunk_size=args.chunk_size, progress=not args.no_progress, shard=shard,
                          csv_safe=args.csv_safe)
    if count > 1:
        finish_part(shard, args.output, args.input, wait=args.distributed)
    note = f" ({result.skipped_errors} bad row(s) as error records)" if result.skipped_errors \
        else ""
    resumed = f", after {result.resumed_from} kept" if result.resumed_from else ""
    cut = f"; {result.truncated} text(s) truncated to {clf.tokenizer.max_length} tokens" \
        if result.truncated else ""
    print(f"predicted {result.written} record(s){resumed} -> {output or 'stdout'}{note}{cut}",
          file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from flaxsent.core.classifier import Classifier
    from flaxsent.evaluate.metrics import plot_metrics
    from flaxsent.evaluate.run import evaluate_file, format_table
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    metrics, labels, probs = evaluate_file(clf, args.data, text_column=args.text_column,
                                           label_column=args.label_column,
                                           input_fmt=args.input_format)
    if args.plot:
        plot_metrics(metrics, labels, probs, args.plot)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_table(metrics))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    sys.stdout.flush()
    return 0


def run_train(args: argparse.Namespace) -> int:
    from flaxsent.train.loop import TrainOptions, train
    opts = TrainOptions(
        model=args.model, data=args.data, out=args.out, eval=args.eval,
        num_labels=args.num_labels,
        label_names=tuple(n.strip() for n in args.label_names.split(",")) if args.label_names
        else None,
        text_column=args.text_column, label_column=args.label_column,
        learning_rate=args.learning_rate, batch_size=args.batch_size,
        warmup_steps=args.warmup_steps, epochs=args.epochs, max_steps=args.max_steps,
        max_length=args.max_length, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm or None, seed=args.seed, grad_accum=args.grad_accum,
        dtype=args.dtype, dropout=not args.no_dropout, shuffle=not args.no_shuffle,
        packed=not args.no_packing, save_every=args.save_every, devices=args.devices,
        resume=args.resume, force=args.force, progress=not args.no_progress,
        tensorboard=args.tensorboard)
    result = train(opts)
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}", file=sys.stderr)
    accuracy = (result.eval_metrics or {}).get("accuracy")
    print(f"trained {result.steps} step(s) on {result.examples} example(s) in "
          f"{result.seconds:.0f} s; last loss {result.final_loss:.4f}"
          + (f", eval accuracy {accuracy:.4f}" if accuracy is not None else "")
          + f" -> {result.out}", file=sys.stderr)
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from flaxsent.errors import ProbeError
    from flaxsent.probe.report import (
        check_out,
        pairs_markdown,
        pairs_record,
        pairs_rows,
        plot_pairs,
        plot_probe,
        probe_markdown,
        probe_record,
        probe_rows,
        write_outputs,
    )
    from flaxsent.probe.run import (
        parse_pair_columns,
        plan_probe,
        read_list,
        read_pairs,
        run_pairs,
        run_probe,
    )
    if args.max_sentences < 1:
        raise ProbeError(f"--max-sentences {args.max_sentences}: must be a positive integer")
    if args.worst < 0:
        raise ProbeError(f"--worst {args.worst}: must be 0 or more")
    templates = list(args.template) + (read_list(args.templates, "--templates")
                                       if args.templates else [])
    if args.pairs is not None:  # everything checked before the model loads
        if templates or args.values:
            raise ProbeError("--pairs takes no --template, --templates or --values: it "
                             "compares the sentences of each pair")
        columns = parse_pair_columns(args.pair_columns)
        pairs = read_pairs(args.pairs, columns)
    else:
        plan = plan_probe(templates, args.values, max_sentences=args.max_sentences)
    if args.out:
        check_out(args.out, args.force)

    from flaxsent.core.classifier import Classifier
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    if args.pairs is not None:
        result = run_pairs(clf, pairs, columns, label=args.label)
        print(pairs_markdown(result, args.model, args.pairs, worst=args.worst))
        record, rows = pairs_record(result, args.model, args.pairs), pairs_rows(result)
        plot = functools.partial(plot_pairs, result, worst=args.worst)
    else:
        result = run_probe(clf, plan, label=args.label)
        print(probe_markdown(result, args.model))
        record, rows = probe_record(result, args.model), probe_rows(result)
        plot = functools.partial(plot_probe, result)
    sys.stdout.flush()
    if args.out:
        written = write_outputs(record, rows, plot, args.out, force=args.force)
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    else:
        print("pass --out DIR to write probe.json, probe.csv and probe.png", file=sys.stderr)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    try:
        from flaxsent.serve.app import ServeOptions, run_server
    except ModuleNotFoundError as e:
        if e.name not in ("fastapi", "starlette", "uvicorn", "prometheus_client", "pydantic"):
            raise
        raise FlaxsentError(f"serving needs {e.name}: pip install 'flaxsent[serve]'") from None
    opts = ServeOptions(model_id=args.model, max_wait_ms=args.max_wait_ms,
                        max_client_batch_size=args.max_client_batch_size,
                        max_concurrent_requests=args.max_concurrent_requests,
                        payload_limit=args.payload_limit,
                        api_key=args.api_key or os.environ.get("FLAXSENT_API_KEY") or None,
                        tokenization_workers=args.tokenization_workers)
    options = classifier_options(args)
    if args.max_batch_tokens is not None:
        options["max_batch_tokens"] = args.max_batch_tokens
    return run_server(args.model, opts, host=args.host, port=args.port,
                      access_log=args.access_log, dtype=args.dtype, **options)




def run_aot(args: argparse.Namespace) -> int:
    from flaxsent.aot.compile import compile_for_topology
    from flaxsent.aot.report import markdown, to_json, write_report
    run = compile_for_topology(args.topology, args.model, args.dtype, pmap=not args.no_pmap,
                               train=not args.no_train,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
    report = to_json(run)
    print(markdown(report))
    if args.out:
        print(f"wrote {write_report(report, args.out)}", file=sys.stderr)
    return 0
