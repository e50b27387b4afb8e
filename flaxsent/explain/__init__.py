"""`flaxsent explain`: per-word attributions of a classifier's scores, as JSONL, HTML and PNG."""
