"""PyTorch eager baseline for the GPU check: the same-shaped ViT-B/16 training step.

torchvision's vit_b_16 (random weights, 224x224, 1000 classes), AdamW, cross-entropy, batch
from --batch, inputs already on the GPU; f32, then bf16 autocast. Prints one JSON line:
{"f32": samples/s, "bf16": samples/s}.
"""
import argparse
import json
import time

import torch
import torchvision


def throughput(batch, steps, bf16):
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
    return batch * steps / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    print(json.dumps({"f32": throughput(a.batch, a.steps, False), "bf16": throughput(a.batch, a.steps, True)}))


if __name__ == "__main__":
    main()
