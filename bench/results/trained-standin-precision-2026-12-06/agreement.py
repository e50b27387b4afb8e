"""Accuracy and argmax agreement of every precision path on the fine-tuned stand-in (held-out 872)."""
import csv, json, sys, time, subprocess
import numpy as np
sys.path.insert(0, "/work/main")
FLAX = "/tmp/trained/sst2-1ep"; HF = "/tmp/trained/sst2-1ep-hf"; ONNX = "/tmp/trained/sst2-1ep-onnx"
rows = list(csv.DictReader(open("/tmp/trained/heldout.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
texts = [r["sentence"] for r in rows]; gold = np.array([int(r["label"]) for r in rows])
from flaxsent import Classifier
out = {}
def add(name, logits):
    out[name] = np.asarray(logits, np.float32)
add("flaxsent fp32", Classifier.from_pretrained(FLAX).logits(texts))
add("flaxsent bf16", Classifier.from_pretrained(FLAX, dtype="bfloat16").logits(texts))
for name, kw in (("flaxsent JAX int8", dict(quantize="int8")),
                 ("flaxsent ONNX fp32", dict(runtime="onnxruntime")),
                 ("flaxsent ONNX int8", dict(runtime="onnxruntime", quantize="int8"))):
    try:
        src = ONNX if "ONNX" in name else FLAX
        add(name, Classifier.from_pretrained(src, **kw).logits(texts))
    except Exception as e:
        print(name, "failed:", type(e).__name__, e)
import torch, transformers as tf
tok = tf.AutoTokenizer.from_pretrained(HF); model = tf.AutoModelForSequenceClassification.from_pretrained(HF).eval()
def torch_logits(autocast):
    res = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i+32], padding=True, truncation=True, max_length=512, return_tensors="pt")
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    res.append(model(**enc).logits.float().numpy())
            else:
                res.append(model(**enc).logits.numpy())
    return np.concatenate(res)
add("PyTorch fp32", torch_logits(False)); add("PyTorch bf16 autocast", torch_logits(True))
ref = out["PyTorch fp32"]; base = out["flaxsent fp32"]
print(f"| path | accuracy | Δ accuracy vs flaxsent fp32 (points) | argmax agreement with PyTorch fp32 | max abs Δlogit vs PyTorch fp32 |")
print("|---|---:|---:|---:|---:|")
table = {}
for name, lg in out.items():
    acc = float((lg.argmax(1) == gold).mean()); agree = float((lg.argmax(1) == ref.argmax(1)).mean())
    d = float(np.abs(lg - ref).max())
    table[name] = dict(accuracy=acc, agreement=agree, max_abs=d)
    print(f"| {name} | {acc:.4f} | {100*(acc - float((base.argmax(1)==gold).mean())):+.2f} | {100*agree:.2f}% | {d:.3g} |")
print("mean |logit| of PyTorch fp32:", float(np.abs(ref).mean()))
json.dump(table, open("/tmp/trained/agreement.json", "w"), indent=1)
