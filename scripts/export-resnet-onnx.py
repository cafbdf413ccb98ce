#!/usr/bin/python3
"""Exports a shared pretrained CIFAR ResNet (option-A shortcuts, the pytorch_resnet_cifar10
layout) to ONNX with Debian's python3-torch, for the ONNX rows of docs/RESULTS.md. Not used by
tests or users (apot itself needs no Python). Usage:

    /usr/bin/python3 scripts/export-resnet-onnx.py ../shared/models/resnet20-cifar10.pt 3 runs/onnx/resnet20.onnx
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or cin != planes else 0

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(Block(cin, planes, stride if i == 0 else 1))
                cin = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.avg_pool2d(x, 8)
        return self.linear(x.view(x.size(0), -1))


def main():
    src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sd = torch.load(src, map_location="cpu")
    sd = sd.get("state_dict", sd)
    sd = {k.replace("module.", ""): v for k, v in sd.items()}
    model = ResNet(n)
    model.load_state_dict(sd)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), out, input_names=["image"], output_names=["logits"],
                      opset_version=13, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


if __name__ == "__main__":
    main()
