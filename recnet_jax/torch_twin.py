"""A PyTorch twin of RECNet and its training objective (NCHW), for moving between frameworks.

Written from ``recnet_reference.md`` (§2-§3 the model, §7 the objective) with the release's semantics
and module names, so its ``state_dict`` has exactly the release's 229 keys, in the release's order::

    import torch
    from recnet_jax import convert, torch_twin

    net = torch_twin.RECNetTorch()                          # PyTorch default init, like the release
    net.load_state_dict(torch_twin.state_dict_from_numpy(convert.to_official(jax_model)))
    out = net(images)                                       # images: float32 [B, 3, H, W] in [0, 1]
    out.image, out.mask, out.stem, out.features             # [B,3,H,W], [B,1,H,W], [B,nc,H,W], K x [B,nc,H,W]

    jax_model = convert.from_official(torch_twin.state_dict_to_numpy(net))   # and back

``norm_variant='official'`` (the default) computes what the release computes; ``'paper'`` is
recnet_jax's region-aware normalisation with masked moments (``recnet_jax/model/rdm.py``), so a model
trained with recnet_jax's default config runs here too. Both have the same parameters.

The objective: :func:`loss_terms` (L1, SSIM term, colour, mask BCE, ECR) with a torchvision-layout VGG16
``features[:23]`` built in plain ``torch.nn`` (:func:`vgg16_features`; torchvision is not needed).

This module imports torch (the optional extra, ``requirements-torch.txt``); nothing else in the
package imports it, so ``import recnet_jax`` never needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORM_VARIANTS = ("official", "paper")
DEFAULT_WEIGHTS = {"l1": 1.0, "ssim": 0.1, "mask": 0.25, "color": 1.0, "ecr": 0.1}
TERMS = ("l1", "ssim", "mask", "color", "ecr")


# --------------------------------------------------------------------------------------------- model

def gaussian_kernel(size: int = 31, std: float = 3.0) -> torch.Tensor:
    """The normalised 2-D Gaussian (std 3) the release initialises every mask blur with: [1,1,k,k]."""
    n = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(n**2) / (2 * std**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(torch.float32)[None, None]


class GaussianBlur(nn.Module):
    """The learnable single-channel mask blur (``norm.blur``): [B,1,H,W] -> [B,1,H,W], zero padding."""

    def __init__(self, size: int = 31):
        super().__init__()
        self.kernel = nn.Parameter(gaussian_kernel(size))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return F.conv2d(m, self.kernel, padding=self.kernel.shape[-1] // 2)


class RIN(nn.Module):
    """RDM, the region-aware de-exposure module (official ``RIN``).

    ``forward(x [B,nc,H,W], mask [B,1,H,W]) -> F_n [B,nc,H,W]``.
    """

    def __init__(self, nc: int = 8, blur_size: int = 31, norm_variant: str = "official",
                 eps: float = 1e-5):
        super().__init__()
        if norm_variant not in NORM_VARIANTS:
            raise ValueError(f"norm_variant must be one of {NORM_VARIANTS}, got {norm_variant!r}")
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.IN = nn.InstanceNorm2d(nc, affine=True, eps=eps)  # pylint: disable=invalid-name
        self.CFR_branches = nn.ModuleList(  # pylint: disable=invalid-name
            [nn.Conv2d(3, 1, 3, padding=1, bias=False) for _ in range(3)])
        self.CFR_tails = nn.ModuleList(  # pylint: disable=invalid-name
            [nn.Conv2d(nc, nc, 3, padding=1, bias=False) for _ in range(3)])
        self.blur = GaussianBlur(blur_size)
        self.fuse_1 = nn.Conv2d(2 * nc, nc, 1)
        self.fuse_2 = nn.Conv2d(2 * nc, nc, 1)
        self.norm_variant, self.eps = norm_variant, eps

    def _norm(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.norm_variant == "official":
            return self.IN(v)
        w = torch.clamp(m, min=0.0)                       # recnet_jax rdm.region_weights
        denom = w.sum(dim=(2, 3), keepdim=True) + self.eps
        mu = (w * v).sum(dim=(2, 3), keepdim=True) / denom
        var = torch.clamp((w * (v - mu) ** 2).sum(dim=(2, 3), keepdim=True) / denom, min=0.0)
        scale, bias = self.IN.weight[None, :, None, None], self.IN.bias[None, :, None, None]
        return w * (scale * (v - mu) * torch.rsqrt(var + self.eps) + bias)

    def _branch(self, i: int, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        y = x * m
        gate_in = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True), m], dim=1)
        a = torch.sigmoid(self.CFR_branches[i](gate_in))
        v = y * a if self.norm_variant == "official" else x * a
        return self.CFR_tails[i](self._norm(v, m))

    def region_weights(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m_u, m_o) = (G * M, G * (1 - M)), each [B,1,H,W]."""
        return self.blur(mask), self.blur(1 - mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m_u, m_o = self.region_weights(mask)
        z_u = self._branch(0, x, m_u)
        z_o = self._branch(1, x, m_o)
        z_g = self._branch(2, x, torch.ones_like(m_u))
        return ((1 - self.alpha) * self.fuse_1(torch.cat([z_u, z_g], 1))
                + self.alpha * self.fuse_2(torch.cat([z_o, z_g], 1)))


class MCSA(nn.Module):
    """The MRU's two paths (official ``MCSA``): ``forward(f_n, x) -> (F_s, F_c)``, each [B,nc,H,W].

    The channel attention's Q and K come from F_n and are not normalised; its values come from the raw
    block input x.
    """

    def __init__(self, nc: int = 8, num_heads: int = 2):
        super().__init__()
        if nc % num_heads:
            raise ValueError(f"nc={nc} is not divisible by num_heads={num_heads}")
        hidden = 2 * nc
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.conv3x3_q = nn.Conv2d(nc, nc, 3, padding=1, groups=nc)
        self.conv5x5_q = nn.Conv2d(nc, nc, 5, padding=2, groups=nc)
        self.project_ch = nn.Conv2d(hidden, nc, 1)
        self.project_in = nn.Conv2d(nc, hidden, 1)
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.dwconv5x5 = nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden)
        self.dwconv3x3_1 = nn.Conv2d(hidden, nc, 3, padding=1, groups=nc)
        self.dwconv5x5_1 = nn.Conv2d(hidden, nc, 5, padding=2, groups=nc)
        self.project_out = nn.Conv2d(hidden, nc, 1)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(tau * Q K^T) V per head over channels; q, k, v [B,C,H,W] -> [B,C,H,W]."""
        b, c, h, w = q.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.temperature, dim=-1)
        return (attn @ v).reshape(b, c, h, w)

    def forward(self, f_n: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.project_in(f_n)
        q3, k3 = F.relu(self.dwconv3x3(p)).chunk(2, dim=1)
        q5, k5 = F.relu(self.dwconv5x5(p)).chunk(2, dim=1)
        v3, v5 = F.relu(self.conv3x3_q(x)), F.relu(self.conv5x5_q(x))
        u = F.relu(self.dwconv3x3_1(torch.cat([q3, q5], 1)))
        w = F.relu(self.dwconv5x5_1(torch.cat([k3, k5], 1)))
        out_local = self.project_out(torch.cat([u, w], 1))
        out_global = self.project_ch(torch.cat([self.attention(q3, k3, v3),
                                                self.attention(q5, k5, v5)], 1))
        return out_local, out_global


class DualBlock(nn.Module):
    """RMB, a region-aware block: ``forward(x [B,nc,H,W], mask [B,1,H,W]) -> [B,nc,H,W]``."""

    def __init__(self, nc: int = 8, num_heads: int = 2, blur_size: int = 31,
                 norm_variant: str = "official", eps: float = 1e-5):
        super().__init__()
        self.norm = RIN(nc, blur_size, norm_variant, eps)
        self.mssa = MCSA(nc, num_heads)
        self.fuse1 = nn.Conv2d(2 * nc, nc, 1)
        self.fuse2 = nn.Conv2d(2 * nc, nc, 1)
        self.post = nn.Sequential(nn.Conv2d(2 * nc, nc, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(nc, nc, 3, padding=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f_n = self.norm(x, mask)
        f_s, f_c = self.mssa(f_n, x)
        h_l = self.fuse1(torch.cat([f_n, f_s], 1))
        h_g = self.fuse2(torch.cat([f_n, f_c], 1))
        return self.post(torch.cat([h_l, h_g], 1)) + x


class IlluNet(nn.Module):
    """EMP, the exposure mask predictor: four 3x3 convs, replicate padding. [B,nc,H,W] -> [B,1,H,W]."""

    def __init__(self, nc: int = 8):
        super().__init__()
        conv = dict(kernel_size=3, padding=1, padding_mode="replicate")
        self.net_convs = nn.Sequential(
            nn.Conv2d(nc, nc, **conv), nn.ReLU(), nn.Conv2d(nc, nc, **conv), nn.ReLU(),
            nn.Conv2d(nc, nc, **conv), nn.ReLU(), nn.Conv2d(nc, 1, **conv), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net_convs(x)


class CALayer(nn.Module):
    """The refine head's channel attention as the release has it: R0 + w * t (t the pooled T)."""

    def __init__(self, nc: int = 8):
        super().__init__()
        reduced = max(nc // 4, 1)
        self.conv_du = nn.Sequential(nn.Conv2d(nc, reduced, 1), nn.ReLU(), nn.Conv2d(reduced, nc, 1),
                                     nn.Sigmoid())
        self.process = nn.Sequential(nn.Conv2d(nc, nc, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(nc, nc, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.process(x).mean(dim=(2, 3), keepdim=True)
        return x + self.conv_du(t) * t


class Refine(nn.Module):
    """Refine head: [B,nc,H,W] -> R [B,3,H,W]."""

    def __init__(self, nc: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(nc, nc, 3, padding=1)
        self.process = nn.Sequential(CALayer(nc))
        self.conv_last = nn.Conv2d(nc, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.process(self.conv_in(x)))


class DualProcess(nn.Module):
    """The blocks, the 1x1 aggregation and the refine head."""

    def __init__(self, nc: int = 8, num_blocks: int = 5, num_heads: int = 2, blur_size: int = 31,
                 norm_variant: str = "official", eps: float = 1e-5):
        super().__init__()
        self.num_blocks = num_blocks
        for k in range(num_blocks):
            self.add_module(f"conv{k + 1}", DualBlock(nc, num_heads, blur_size, norm_variant, eps))
        self.cat = nn.Conv2d(num_blocks * nc, nc, 1)
        self.refine = Refine(nc)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        features = []
        for k in range(self.num_blocks):
            x = getattr(self, f"conv{k + 1}")(x, mask)
            features.append(x)
        return self.refine(self.cat(torch.cat(features, 1))), features


class TwinOutput(NamedTuple):
    """What :class:`RECNetTorch` returns (NCHW).

    image [B,3,H,W] in [0,1]; mask [B,1,H,W] (1 = under-exposed); stem [B,nc,H,W] (F0);
    features: num_blocks tensors [B,nc,H,W] (X1..XK); pre_clamp [B,3,H,W] (R, before +1e-5 and clip).
    """

    image: torch.Tensor
    mask: torch.Tensor
    stem: torch.Tensor
    features: tuple
    pre_clamp: torch.Tensor


class RECNetTorch(nn.Module):
    """RECNet in PyTorch (the release's ``InteractNet``), NCHW, with the release's state_dict keys.

    Args: as :class:`recnet_jax.RECNet` (nc, num_blocks, num_heads, blur_size, norm_variant, norm_eps),
    but the default ``norm_variant`` is ``'official'``. Initialisation is PyTorch's default, i.e. the
    release's (the blur kernels start as the normalised 31x31 Gaussian with std 3).

    Call: ``net(images)`` with images float32 [B,3,H,W] in [0,1] -> :class:`TwinOutput`.
    """

    def __init__(self, nc: int = 8, num_blocks: int = 5, num_heads: int = 2, blur_size: int = 31,
                 norm_variant: str = "official", norm_eps: float = 1e-5):
        super().__init__()
        self.learned_mask = IlluNet(nc)
        self.extract = nn.Conv2d(3, nc, 3, padding=1)
        self.dualprocess = DualProcess(nc, num_blocks, num_heads, blur_size, norm_variant, norm_eps)
        self.norm_variant = norm_variant

    def forward(self, images: torch.Tensor) -> TwinOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"RECNetTorch expects images of shape [B, 3, H, W] (NCHW, RGB, float in "
                             f"[0, 1]); got shape {tuple(images.shape)}")
        f0 = self.extract(images)
        mask = self.learned_mask(f0)
        r, features = self.dualprocess(f0, mask)
        return TwinOutput(torch.clamp(r + 1e-5, 0.0, 1.0), mask, f0, tuple(features), r)


def state_dict_from_numpy(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{official key: numpy array} (e.g. ``convert.to_official(model)``) -> {key: float32 tensor}.
    A ``param/`` or ``module.`` prefix is stripped; a fixture's ``meta_json`` and activations are
    skipped when ``param/`` keys are present."""
    if any(k.startswith("param/") for k in state):
        state = {k[len("param/"):]: v for k, v in state.items() if k.startswith("param/")}
    return {k.removeprefix("module."): torch.from_numpy(np.array(v, dtype=np.float32))
            for k, v in state.items() if k != "meta_json"}


def state_dict_to_numpy(net: nn.Module) -> dict[str, np.ndarray]:
    """The twin's state_dict as {official key: float32 numpy array}, for ``convert.from_official``."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}


# ----------------------------------------------------------------------------------------- objective

VGG_LAYOUT = ((0, 3, 64), (2, 64, 64), "M", (5, 64, 128), (7, 128, 128), "M", (10, 128, 256),
              (12, 256, 256), (14, 256, 256), "M", (17, 256, 512), (19, 512, 512), (21, 512, 512))


def vgg16_features(state: Mapping[str, np.ndarray | torch.Tensor] | None = None,
                   seed: int = 0) -> nn.Sequential:
    """torchvision's ``vgg16().features[:23]`` (same indices, so ``'0.weight'`` ... ``'21.bias'``),
    built in plain ``torch.nn`` and frozen. [N,3,H,W] -> relu4_3 [N,512,H//8,W//8].

    Args:
      state: {'<i>.weight': OIHW, '<i>.bias': (out,)}, optionally prefixed ``features.`` or ``vgg/``;
        None: torchvision's init (kaiming-normal fan_out weights, zero biases) from ``seed``.
    """
    layers: list[nn.Module] = []
    for item in VGG_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            _, cin, cout = item
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
    seq = nn.Sequential(*layers)
    if state is None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in seq:
                if isinstance(m, nn.Conv2d):
                    std = math.sqrt(2.0 / (m.out_channels * 9))
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()
    else:
        prefixes = ("features.", "vgg/")
        clean = {}
        for k, v in state.items():
            for p in prefixes:
                k = k.removeprefix(p)
            if k.split(".")[0].isdigit() and int(k.split(".")[0]) < 23:
                clean[k] = torch.as_tensor(np.asarray(v, np.float32))
        seq.load_state_dict(clean)
    for p in seq.parameters():
        p.requires_grad_(False)
    return seq


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)],
                     dtype=torch.float32)
    return g / g.sum()


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """The release's training SSIM (pytorch-ssim): the mean of the zero-padded 'same' SSIM map.
    img1, img2 [B,C,H,W] -> scalar."""
    channel = img1.shape[1]
    g = _gaussian_taps(window_size)[:, None]
    window = (g @ g.t())[None, None].expand(channel, 1, window_size, window_size).contiguous()
    window = window.to(img1.dtype)
    conv = lambda t: F.conv2d(t, window, padding=window_size // 2, groups=channel)  # noqa: E731
    mu1, mu2 = conv(img1), conv(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = conv(img1 * img1) - mu1_sq
    sigma2_sq = conv(img2 * img2) - mu2_sq
    sigma12 = conv(img1 * img2) - mu1_mu2
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spatial correlation Gamma(a, b): [N,C,h,w] x2 -> [N, h*w, h*w]."""
    n, c, h, w = a.shape
    return torch.bmm(a.reshape(n, c, h * w).transpose(1, 2), b.reshape(n, c, h * w))


def ecr_loss(vgg: nn.Module, out: torch.Tensor, mask: torch.Tensor, lq: torch.Tensor,
             gt: torch.Tensor) -> torch.Tensor:
    """The release's EXCloss (§7.6): 4x4 max pool, complement after pooling, mask not detached.
    out, lq, gt [B,3,H,W], mask [B,1,H,W] -> scalar (L_ss + L_cs)."""
    pool = lambda x: F.max_pool2d(x, 4, 4)  # noqa: E731
    p_out, p_gt, p_in, p_m = pool(out), pool(gt), pool(lq), pool(mask)
    p_mc = 1 - p_m
    f_f, f_b = vgg(p_out * p_m), vgg(p_out * p_mc)
    g_f, g_b = vgg(p_gt * p_m), vgg(p_gt * p_mc)
    l_f, l_b = vgg(p_in * p_m), vgg(p_in * p_mc)
    d_fp, d_bp = F.l1_loss(f_f, g_f), F.l1_loss(f_b, g_b)
    l_ss = (d_fp / (d_fp + F.l1_loss(l_f, g_f) + 1e-8)
            + d_bp / (d_bp + F.l1_loss(l_b, g_b) + 1e-8))
    c, c_p, c_m = _gram(f_f, f_b), _gram(g_f, g_b), _gram(l_f, l_b)
    d_cp = F.l1_loss(c, c_p)
    return l_ss + d_cp / (d_cp + F.l1_loss(c, c_m) + 1e-8)


def mask_target(lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """T = 1[Y(gt) - Y(lq) > 0], [B,1,H,W] (no gradient)."""
    y = lambda im: 0.299 * im[:, 0:1] + 0.587 * im[:, 1:2] + 0.114 * im[:, 2:3]  # noqa: E731
    return (y(gt) - y(lq) > 0).to(lq.dtype)


def loss_terms(image: torch.Tensor, mask: torch.Tensor, lq: torch.Tensor, gt: torch.Tensor,
               vgg: nn.Module | None, weights: Mapping[str, float] | None = None) -> dict:
    """The release's objective, term by term, as ``recnet_jax.losses.loss_terms`` names them.

    Args:
      image: Î [B,3,H,W]; mask: M [B,1,H,W]; lq: input [B,3,H,W]; gt: target [B,3,H,W].
      vgg: :func:`vgg16_features`, or None (the ECR is then 0 and not part of the total).
      weights: any of l1, ssim, mask, color, ecr; missing keys take :data:`DEFAULT_WEIGHTS`.
    Returns:
      {'l1', 'ssim', 'mask', 'color', 'ecr', 'total'}: scalar tensors, the first five unweighted.
    """
    w = dict(DEFAULT_WEIGHTS, **dict(weights or {}))
    unknown = set(w) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {TERMS}")
    terms = {
        "l1": F.l1_loss(image, gt),
        "ssim": -ssim(image, gt),
        "mask": F.binary_cross_entropy(mask, mask_target(lq, gt)),
        "color": 0.5 * (1 - F.cosine_similarity(image, gt, dim=1, eps=1e-8).mean()),
    }
    use_ecr = vgg is not None and w["ecr"] != 0
    terms["ecr"] = ecr_loss(vgg, image, mask, lq, gt) if use_ecr else image.new_zeros(())
    terms["total"] = sum(w[k] * terms[k] for k in TERMS if k != "ecr" or use_ecr)
    return terms


def make_train_step(net: RECNetTorch, vgg: nn.Module | None, weights=None, lr: float = 1e-4,
                    betas=(0.9, 0.99), eps: float = 1e-8):
    """The release's training step: forward, the full objective, backward, Adam (lr 1e-4, betas
    (0.9, 0.99)). Returns ``step(lq, gt) -> {term: float}``; lq, gt [B,3,H,W]."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps)

    def step(lq: torch.Tensor, gt: torch.Tensor) -> dict:
        opt.zero_grad(set_to_none=True)
        out = net(lq)
        terms = loss_terms(out.image, out.mask, lq, gt, vgg, weights)
        terms["total"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    return step
