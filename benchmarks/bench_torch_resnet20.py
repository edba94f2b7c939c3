"""PyTorch reference points for issue 3: ResNet-20 training steps in PyTorch on this machine.

Two networks, both the authors' CIFAR ResNet-20 (same layers as ``addercore.models.resnet20``):
  * ``cnn``: every body layer a bias-free ``nn.Conv2d`` (PyTorch's own convolution);
  * ``unfold``: every body layer the authors' adder layer as they published it
    (``adder.py`` of huawei-noah/AdderNet): ``F.unfold`` of the input, then the
    ``Cout × K × P`` broadcast ``-(W_col[:, :, None] - X_col[None]).abs().sum(1)``, with their
    custom backward (full-precision filter gradient with adaptive scaling, HardTanh input
    gradient), each a ``Cout × K × P`` temporary too.
A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, weight decay
5e-4); best of ``--steps`` after one warm-up step; random images (speed does not depend on the
values).  Needs PyTorch; without it the script says so and exits 0 (it is a comparison only:
addercore itself never imports torch).

    python benchmarks/bench_torch_resnet20.py --kind cnn unfold --batch 64 --threads 1 2
"""
import argparse
import math
import sys
import time


def build(torch, kind, num_classes=10):
    nn, F = torch.nn, torch.nn.functional

    class AdderFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w_col, x_col):
            ctx.save_for_backward(w_col, x_col)
            return -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)

        @staticmethod
        def backward(ctx, grad_output):
            w_col, x_col = ctx.saved_tensors
            grad_w = ((x_col.unsqueeze(0) - w_col.unsqueeze(2)) * grad_output.unsqueeze(1)).sum(2)
            grad_w = (grad_w / grad_w.norm(p=2).clamp(min=1e-12)
                      * math.sqrt(w_col.size(1) * w_col.size(0)) / 5)
            grad_x = (-(x_col.unsqueeze(0) - w_col.unsqueeze(2)).clamp(-1, 1)
                      * grad_output.unsqueeze(1)).sum(0)
            return grad_w, grad_x

    class Adder2d(nn.Module):
        def __init__(self, cin, cout, k, stride=1, padding=0):
            super().__init__()
            self.stride, self.padding = stride, padding
            self.adder = nn.Parameter(nn.init.normal_(torch.randn(cout, cin, k, k)))

        def forward(self, x):
            cout, _, k, _ = self.adder.shape
            n, _, h, w = x.shape
            ho = (h - k + 2 * self.padding) // self.stride + 1
            wo = (w - k + 2 * self.padding) // self.stride + 1
            x_col = F.unfold(x.view(1, -1, h, w), k, padding=self.padding, stride=self.stride)
            x_col = x_col.view(n, -1, ho * wo).permute(1, 2, 0).contiguous()
            x_col = x_col.view(x_col.size(0), -1)
            out = AdderFunction.apply(self.adder.view(cout, -1), x_col)
            return out.view(cout, ho, wo, n).permute(3, 0, 1, 2).contiguous()

    def body(cin, cout, k, stride=1, padding=0):
        if kind == "cnn":
            return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        return Adder2d(cin, cout, k, stride, padding)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = body(cin, cout, 3, stride, 1)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = body(cout, cout, 3, 1, 1)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(body(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    layers = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            layers.append(Block(cin, cout, stride if b == 0 else 1))
            cin = cout
    layers += [nn.AvgPool2d(8), nn.Conv2d(64, num_classes, 1, bias=False),
               nn.BatchNorm2d(num_classes), nn.Flatten()]
    return nn.Sequential(*layers)


def train_img_s(torch, kind, batch, threads, steps):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = build(torch, kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return batch / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", nargs="+", default=["cnn", "unfold"], choices=["cnn", "unfold"])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: nothing to compare (addercore does not need it).")
        return 0
    print(f"# torch {torch.__version__}")
    print(f"{'torch kind':10} {'batch':>5} {'thr':>3} | {'train img/s':>11}")
    for threads in args.threads:
        for kind in args.kind:
            for batch in args.batch:
                rate = train_img_s(torch, kind, batch, threads, args.steps)
                print(f"{kind:10} {batch:5d} {threads:3d} | {rate:11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
