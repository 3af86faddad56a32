"""PyTorch eager baseline for the GPU check: the same-shaped ViT-B/16 training step.

torchvision's vit_b_16 (random weights, 224x224, 1000 classes), AdamW, cross-entropy, batch
from --batch, inputs already on the GPU; f32, then bf16 autocast. Prints one JSON line:
{"f32": samples/s, "bf16": samples/s}, plus "<key>_phases_ms" with --breakdown.
"""
import argparse
import json
import time

import torch
import torchvision


def throughput(batch, steps, bf16, breakdown=False):
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).cuda().train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.arange(batch, device="cuda") % 1000

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    sps = batch * steps / (time.perf_counter() - start)
    if not breakdown:
        return sps, None
    # The same step, synchronised between phases: forward and loss, backward, optimiser.
    phases = [0.0, 0.0, 0.0]
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        optim.step()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        for i, d in enumerate((t1 - t0, t2 - t1, t3 - t2)):
            phases[i] += 1e3 * d / steps
    return sps, phases


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--breakdown", action="store_true", help="also time forward, backward and optimiser")
    a = p.parse_args()
    out = {}
    for key, bf16 in (("f32", False), ("bf16", True)):
        sps, phases = throughput(a.batch, a.steps, bf16, a.breakdown)
        out[key] = sps
        if phases is not None:
            out[key + "_phases_ms"] = phases
    print(json.dumps(out))


if __name__ == "__main__":
    main()
