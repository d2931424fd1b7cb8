#!/bin/bash
# The GPU path on an accelerator machine (no Ray there: serial executor): batched draws against the
# one-draw loop on CUDA, then a two-seed run on digits with every stage. Prints what it measured.
set -e
python3 - <<'PY'
import torch
from certify.models import build_model
from certify.certificate.draws import draw_accuracies
torch.manual_seed(0)
m = build_model("cnn", (3, 32, 32), 10, 0).cuda().eval()
x, y = torch.rand(1000, 3, 32, 32), torch.randint(0, 10, (1000,))
loop = draw_accuracies(m, 0.05, 7, 0, 32, x, y, 500, draws_per_pass=1)
batched = draw_accuracies(m, 0.05, 7, 0, 32, x, y, 500, draws_per_pass=16)
print("cuda draws: loop vs batched max |diff|", abs(loop - batched).max(), "device", torch.cuda.get_device_name())
PY
python3 -m certify.cli --quiet run --poison random,em --dataset digits --samples 40 --seeds 2 --executor serial \
  --defense jpeg --out /tmp/gpu-run --cache-dir /tmp/gpu-cache
python3 - <<'PY'
import json
r = json.load(open("/tmp/gpu-run/report.json"))
print("environment", r["environment"])
for n, s in r["poisons"].items():
    e = s["empirical"]
    print(n, "seeds", [x["seed"] for x in s["replicates"]], "protected", round(e["protected_accuracy"], 3),
          [round(v, 3) for v in e["protected_interval"]], "verdict", s["verdict"]["level"])
PY
