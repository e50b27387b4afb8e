set -e
cd /tmp/exp
python3 - <<'PY'
piece = "the movie was great , but the plot was dull ! "
n = 500_000_000 // len(piece)
with open("/tmp/exp/huge.txt", "w") as f:
    f.write("fine\n")
    for _ in range(100):
        f.write(piece * (n // 100))
    f.write("\nalso fine\n")
PY
ls -la /tmp/exp/huge.txt
M=$(ls -d /root/.cache/flaxsent/bench-default-eea4e78f2ddd)
/usr/bin/time -v python3 /tmp/rss/measure_cli.py predict --model $M /tmp/exp/huge.txt -o /tmp/exp/huge.jsonl --force --no-progress 2>/tmp/exp/huge.err | tail -1
grep -E "Maximum resident|Elapsed" /tmp/exp/huge.err
cut -c1-200 /tmp/exp/huge.jsonl
PY_DONE=1
