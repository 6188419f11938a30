"""gen_schedule_goldens.py - learning-rate goldens for tests/run/test_run_opts.c, computed by
transformers' own schedulers (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
get_cosine_schedule_with_warmup) driving a torch AdamW, exactly as the Trainer does: the lr of
the k-th update is read from the optimizer before optimizer.step() / scheduler.step().

Run with the golden venv (torch + transformers; not needed in CI):
    .venv-golden/bin/python tools/gen_schedule_goldens.py tests/data/run/lr_schedules.json
"""
import json
import sys

import torch
import transformers
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

CASES = [  # (schedule, base lr, warmup, total)
    ("constant", 1e-4, 0, 10), ("constant", 3e-4, 4, 12),
    ("linear", 1e-4, 0, 10), ("linear", 2e-4, 3, 17), ("linear", 5e-5, 1, 2),
    ("linear", 1e-3, 10, 10),
    ("cosine", 1e-4, 0, 10), ("cosine", 2e-4, 5, 40), ("cosine", 1e-3, 1, 3),
    ("cosine", 3e-4, 7, 1000),
]


def main(out):
    cases = []
    for sched, lr, warmup, total in CASES:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=lr)
        if sched == "constant":
            s = get_constant_schedule_with_warmup(opt, warmup)
        elif sched == "linear":
            s = get_linear_schedule_with_warmup(opt, warmup, total)
        else:
            s = get_cosine_schedule_with_warmup(opt, warmup, total)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            p.grad = torch.ones(1)
            opt.step()
            s.step()
        cases.append({"schedule": sched, "lr": lr, "warmup": warmup, "total": total, "lrs": lrs})
    with open(out, "w") as f:
        json.dump({"generator": "tools/gen_schedule_goldens.py", "torch": torch.__version__,
                   "transformers": transformers.__version__, "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
