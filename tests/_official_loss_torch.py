"""A PyTorch transcription of the release's training objective (NCHW), as recnet_reference.md §7 gives it.

Used only to cross-check recnet_jax.losses on batches, sizes and weights that the stored fixture does not
cover, including gradients with respect to the output image and the mask. Imports torch: import this
module only after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

from math import exp

import torch
import torch.nn.functional as F
from torch import nn

VGG_LAYOUT = (
    (0, 3, 64),
    (2, 64, 64),
    "M",
    (5, 64, 128),
    (7, 128, 128),
    "M",
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    "M",
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
)


def vgg16_features23(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """torchvision vgg16().features[:23] built by hand (same indices), loaded from ``{'0.weight': ...}``."""
    layers: list[nn.Module] = []
    for item in VGG_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            _, cin, cout = item
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 23
    seq.load_state_dict(state)
    for p in seq.parameters():
        p.requires_grad_(False)
    return seq


# pytorch-ssim, as used by the release (training variant).
def _gaussian(window_size, sigma):
    gauss = torch.Tensor(
        [exp(-((x - window_size // 2) ** 2) / float(2 * sigma**2)) for x in range(window_size)]
    )
    return gauss / gauss.sum()


def _create_window(window_size, channel):
    w1 = _gaussian(window_size, 1.5).unsqueeze(1)
    w2 = w1.mm(w1.t()).float().unsqueeze(0).unsqueeze(0)
    return w2.expand(channel, 1, window_size, window_size).contiguous()


def ssim(img1, img2, window_size=11):
    channel = img1.size(1)
    window = _create_window(window_size, channel).type_as(img1)
    mu1 = F.conv2d(img1, window, padding=window_size // 2, groups=channel)
    mu2 = F.conv2d(img2, window, padding=window_size // 2, groups=channel)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=window_size // 2, groups=channel) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=window_size // 2, groups=channel) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=window_size // 2, groups=channel) - mu1_mu2
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.mean()


def _gram(a, b):
    n, c, h, w = a.shape
    return torch.bmm(a.view(n, c, h * w).transpose(1, 2), b.view(n, c, h * w))


def exc_loss(vgg, out, mask, lq, gt):
    """EXCloss per §7.6: pool 4, complement after pooling, mask not detached."""
    pool = lambda x: F.max_pool2d(x, 4, 4)  # noqa: E731
    p_out, p_gt, p_in, p_m = pool(out), pool(gt), pool(lq), pool(mask)
    p_mc = 1 - p_m
    f_f, f_b = vgg(p_out * p_m), vgg(p_out * p_mc)
    g_f, g_b = vgg(p_gt * p_m), vgg(p_gt * p_mc)
    l_f, l_b = vgg(p_in * p_m), vgg(p_in * p_mc)
    l1 = nn.L1Loss()
    d_fp, d_bp = l1(f_f, g_f), l1(f_b, g_b)
    l_ss = d_fp / (d_fp + l1(l_f, g_f) + 1e-8) + d_bp / (d_bp + l1(l_b, g_b) + 1e-8)
    c, c_p, c_m = _gram(f_f, f_b), _gram(g_f, g_b), _gram(l_f, l_b)
    d_cp = l1(c, c_p)
    l_cs = d_cp / (d_cp + l1(c, c_m) + 1e-8)
    return l_ss + l_cs


def official_terms(vgg, out, mask, lq, gt, weights):
    """Returns {'l1', 'ssim', 'mask', 'color', 'ecr', 'total'} (torch scalars), NCHW inputs."""
    y = lambda im: 0.299 * im[:, 0:1] + 0.587 * im[:, 1:2] + 0.114 * im[:, 2:3]  # noqa: E731
    thres = (y(gt) - y(lq) > 0).to(mask.dtype)
    terms = {
        "l1": F.l1_loss(out, gt),
        "ssim": -ssim(out, gt),
        "mask": nn.BCELoss()(mask, thres),
        "color": 0.5 * (1 - nn.CosineSimilarity(dim=1, eps=1e-8)(out, gt).mean()),
        "ecr": exc_loss(vgg, out, mask, lq, gt),
    }
    terms["total"] = sum(weights[k] * terms[k] for k in ("l1", "ssim", "mask", "color", "ecr"))
    return terms
