"""DISTS-style fidelity measure on any backbone: a loss for the optimize stage, a metric for assess.

DISTS (Ding et al. 2020; docs/fidelity.md). Stage 0 = the raw pixels in [0,1], stages 1..K = the
backbone's maps. Per stage i and channel j, with spatial statistics (biased variance):

    l_ij = l(mu_x, mu_y),  l(a, b) = (2 a b + c1) / (a^2 + b^2 + c1)      texture (mean) term
    s_ij = (2 cov_xy + c2) / (var_x + var_y + c2)                       structure (covariance) term
    D(x, y) = 1 - sum_ij (alpha_ij l_ij + beta_ij s_ij) / (sum alpha + sum beta),   c1 = c2 = 1e-6

Signed features. l is SSIM's luminance comparison: a similarity of two non-negative magnitudes, in
[0, 1] only when a b >= 0. VGG's ReLU maps (and ResNet's) are non-negative, but the residual-stream
maps of ConvNeXt, Swin, CLIP-ViT and DINOv2 are signed (about half their channel means are
negative), and there l reaches -1 for a mild noise pair: the distance then rewards flipping a
channel's mean. The treatment here: each channel is split into its positive and negative parts,
f = f+ - f-, both non-negative, and the texture term compares the mean of each part,

    l_ij = l(mean f+_x, mean f+_y) * l(mean f-_x, mean f-_y)

so both factors are in [0, 1] and l_ij = 1 only when both parts match. The two means keep both the
signed mean (mean f+ - mean f-) and the mean magnitude (mean f+ + mean f-): no first-order statistic
is discarded (ReLU would drop the negative half; |f| the sign). On non-negative features f- = 0, the
second factor is exactly (0 + c1) / (0 + c1) = 1 and l_ij is bit-for-bit DISTS's: VGG-16 DISTS (and
ResNet-50, whose maps are ReLU outputs) is unchanged for any input (tested). Stage 0, the pixels,
is an intensity and keeps DISTS's form, so an SR output overshooting [0, 1] is judged as DISTS
judges it. The structure term is a correlation, defined for signed maps as it is (SSIM's
structure term compares zero-mean signals), and is computed on the features themselves: rectifying
it would throw away the sign pattern of the maps. D(x, x) = 0 on every backbone.

With the vgg16 backbone (L2 pooling, five stages) and the official alpha/beta file this is
exactly DISTS. Other backbones start from uniform alpha/beta, or from alpha/beta fitted with
fit_alpha_beta (MOS agreement plus DISTS's texture-invariance term) and saved with save_alpha_beta.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from raygrid.nets.backbones import Backbone, create_backbone
from raygrid.weights import FILE_PREFIX, resolve_file

C1 = C2 = 1e-6
ALPHA_BETA_CHOICES = ("uniform", "dists", "file:PATH")


def _mean_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DISTS's texture comparison of two non-negative channel means: in [0, 1], 1 iff a == b."""
    return (2 * a * b + C1) / (a * a + b * b + C1)


class FidelityMeasure(nn.Module):
    """Full-reference distance, lower = more similar (0 for identical images).

    forward(x, y) -> Tensor[N] per-image distances; with as_loss=True (pyiqa style) or .loss(x, y)
    the batch mean. Gradients reach x only, and only when x requires grad: the backbone and
    alpha/beta are frozen and the reference y is always computed without a graph. So a metric call
    (x without grad) builds no graph, and a loss call needs no mode switch.
    """

    lower_better = True
    mode = "FR"
    # In practice; in theory [0, 2): the texture term is in [0, 1] on every backbone, the structure
    # term in [-1, 1] (anti-correlated maps), as in DISTS.
    score_range = (0.0, 1.0)

    def __init__(self, backbone: Backbone, alpha: torch.Tensor | None = None, beta: torch.Tensor | None = None,
                 as_loss: bool = False):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        self.chns = [3, *backbone.channels]
        total = sum(self.chns)
        uniform = torch.full((1, total, 1, 1), 1.0 / (2 * total))
        # Parameters (like DISTS) so they move with .to() and live in the state dict; frozen
        # except inside fit_alpha_beta.
        self.alpha = nn.Parameter(uniform.clone() if alpha is None else alpha.detach().clone(), requires_grad=False)
        self.beta = nn.Parameter(uniform.clone() if beta is None else beta.detach().clone(), requires_grad=False)
        if self.alpha.shape != (1, total, 1, 1) or self.beta.shape != (1, total, 1, 1):
            raise ValueError(
                f"alpha/beta must have shape (1, {total}, 1, 1) for {backbone.name} (channels {self.chns}); "
                f"got {tuple(self.alpha.shape)} / {tuple(self.beta.shape)}"
            )
        self.as_loss = as_loss

    @property
    def name(self) -> str:
        return self.backbone.name

    def train(self, mode: bool = True):
        # The backbone is a fixed feature extractor: BatchNorm statistics must never update.
        super().train(mode)
        self.backbone.eval()
        return self

    # -- features and similarity terms --------------------------------------------------------

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, *self.backbone(x)]

    def similarity_terms(self, x: torch.Tensor, y: torch.Tensor, y_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel texture and structure terms, each N x sum(C) (stage-major order).

        The distance is linear in alpha/beta given these, which is what makes fitting cheap.
        """
        if x.shape != y.shape:
            raise ValueError(f"{self.name}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.features(x)
        with torch.set_grad_enabled(y_grad and torch.is_grad_enabled()):
            fy = self.features(y)
        s1, s2 = [], []
        for stage, (a, b) in enumerate(zip(fx, fy)):
            # Statistics in float32 even under autocast: c1 = c2 = 1e-6 is below fp16's normal range.
            a, b = a.float(), b.float()
            mx, my = a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)
            da, db = a - mx, b - my
            vx, vy = (da * da).mean((2, 3)), (db * db).mean((2, 3))
            # Centred covariance: equal to E[xy] - mu_x mu_y (the official form) up to rounding,
            # but exactly var_x for x == y, so D(x, x) = 0 and D is exactly symmetric.
            cov = (da * db).mean((2, 3))
            mx, my = mx.flatten(1), my.flatten(1)
            if stage == 0:  # pixel intensities: compared as DISTS does (a generator may overshoot [0, 1])
                s1.append(_mean_similarity(mx, my))
            else:
                # Means of the positive parts, and of the negative parts as mean(f+) - mean(f): one
                # extra reduction, no extra feature-sized tensor kept for backward; exactly 0 where f >= 0.
                px, py = a.clamp(min=0).mean((2, 3)), b.clamp(min=0).mean((2, 3))
                nx, ny = (px - mx).clamp(min=0), (py - my).clamp(min=0)
                s1.append(_mean_similarity(px, py) * _mean_similarity(nx, ny))
            s2.append((2 * cov + C2) / (vx + vy + C2))
        return torch.cat(s1, 1), torch.cat(s2, 1)

    def normalized_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w_sum = self.alpha.sum() + self.beta.sum()
        return self.alpha.flatten() / w_sum, self.beta.flatten() / w_sum

    def distance(self, x: torch.Tensor, y: torch.Tensor, y_grad: bool = False) -> torch.Tensor:
        s1, s2 = self.similarity_terms(x, y, y_grad=y_grad)
        a, b = self.normalized_weights()
        # = 1 - sum(a*s1 + b*s2) since sum(a) + sum(b) = 1, written so that D(x, x) is exactly 0
        # rather than the float32 rounding of a 3000-term weight sum. Elementwise, not a matmul,
        # so that autocast cannot lower it to half precision.
        return ((1 - s1) * a).sum(1) + ((1 - s2) * b).sum(1)

    # -- metric / loss --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.as_loss:
            return self.loss(x, y)
        return self.distance(x, y.detach())

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Batch-mean distance, differentiable w.r.t. x (the generator output)."""
        return self.distance(x, y.detach()).mean()

    # -- alpha/beta persistence -----------------------------------------------------------------

    def save_alpha_beta(self, path: str | os.PathLike) -> Path:
        a, b = self.normalized_weights()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"alpha": a.detach().cpu().view(1, -1, 1, 1), "beta": b.detach().cpu().view(1, -1, 1, 1),
             "backbone": self.name, "channels": self.chns},
            path,
        )
        return path

    def load_alpha_beta(self, path: str | os.PathLike) -> None:
        alpha, beta = load_alpha_beta(path, self.name, self.chns)
        with torch.no_grad():
            self.alpha.copy_(alpha)
            self.beta.copy_(beta)

    def fit_alpha_beta(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], steps: int = 500,
                       lr: float = 1e-2, **kw) -> dict:
        """Fit alpha/beta in place with DISTS's objective (MOS agreement on (dist, ref, score)
        batches; texture invariance on texture_pairs=(crop_a, crop_b) batches); see the module function."""
        return fit_alpha_beta(self, pairs, steps=steps, lr=lr, **kw)

    def extra_repr(self) -> str:
        return f"backbone={self.name!r}, chns={self.chns}, as_loss={self.as_loss}"


def load_alpha_beta(path: str | os.PathLike, backbone: str, chns: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read {'alpha', 'beta'} (official DISTS file or save_alpha_beta output); check it fits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alpha/beta file {str(path)!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "alpha" not in obj or "beta" not in obj:
        raise ValueError(f"{path}: expected a dict with 'alpha' and 'beta' tensors, got {type(obj).__name__} "
                         f"with keys {list(obj)[:6] if isinstance(obj, dict) else '-'}")
    saved_for = obj.get("backbone")
    if saved_for is not None and saved_for != backbone:
        raise ValueError(f"{path}: alpha/beta were fitted for backbone {saved_for!r}, not {backbone!r}")
    total = sum(chns)
    alpha, beta = obj["alpha"].float(), obj["beta"].float()
    if alpha.numel() != total or beta.numel() != total:
        raise ValueError(
            f"{path}: alpha/beta have {alpha.numel()}/{beta.numel()} entries; backbone {backbone!r} with "
            f"stage channels {chns} needs {total}"
        )
    if (alpha < 0).any() or (beta < 0).any():
        raise ValueError(f"{path}: alpha/beta must be non-negative")
    return alpha.view(1, total, 1, 1), beta.view(1, total, 1, 1)


def create_fidelity(
    backbone: str,
    weights: str = "random",
    alpha_beta: str = "uniform",
    weights_dir: str | None = None,
    as_loss: bool = False,
) -> FidelityMeasure:
    """DISTS-style measure on a backbone.

    alpha_beta: "uniform" | "dists" (official DISTS alpha/beta from the weights dir; vgg16 only)
    | "file:PATH" (saved by save_alpha_beta, or the official file under any name).
    """
    net = create_backbone(backbone, weights, weights_dir)
    measure = FidelityMeasure(net, as_loss=as_loss)
    if alpha_beta == "uniform":
        pass
    elif alpha_beta == "dists":
        if backbone != "vgg16":
            raise ValueError(
                f"alpha_beta='dists' is calibrated for the ImageNet VGG-16 (backbone 'vgg16'), not {backbone!r}; "
                "use 'uniform' or 'file:PATH'"
            )
        measure.load_alpha_beta(resolve_file("dists.alpha_beta", weights_dir))
    elif alpha_beta.startswith(FILE_PREFIX):
        measure.load_alpha_beta(alpha_beta[len(FILE_PREFIX) :])
    else:
        raise ValueError(f"unknown alpha_beta {alpha_beta!r}; expected one of {ALPHA_BETA_CHOICES}")
    return measure


# ---------------------------------------------------------------------------------------------
# Fitting alpha/beta: DISTS's objective (MOS agreement + texture-resampling invariance)
# ---------------------------------------------------------------------------------------------


def _plcc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-12)


def _ranks(t: torch.Tensor) -> torch.Tensor:
    return t.argsort().argsort().double()  # ties broken arbitrarily: fine for continuous scores


def _srcc(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_plcc(_ranks(a), _ranks(b)))


def texture_crop_pairs(images, crop: int = 64, pairs_per_image: int = 2, batch_size: int = 16,
                       seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of non-overlapping crops of one image, for the texture-invariance term.

    images: tensors 3 x H x W (or 1 x 3 x H x W) in [0, 1], e.g. a benchmark's reference images or
    a folder of texture photographs; each needs H >= 2 crop or W >= 2 crop. Per pair, the axis the
    crops are separated along is drawn among those long enough, the two crops' offsets along it
    leave no overlap, and the other offset of each crop is drawn independently. Returns batches
    (crop_a, crop_b), each N x 3 x crop x crop. Seeded: the same call gives the same crops.
    """
    gen = torch.Generator().manual_seed(seed)

    def draw(high: int) -> int:  # uniform integer in [0, high]
        return int(torch.randint(0, high + 1, (1,), generator=gen))

    a_crops, b_crops = [], []
    for i, img in enumerate(images):
        img = img[0] if img.dim() == 4 and img.shape[0] == 1 else img
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"texture_crop_pairs: image {i} has shape {tuple(img.shape)}; expected 3 x H x W")
        h, w = img.shape[1:]
        axes = [ax for ax, size in ((0, h), (1, w)) if size >= 2 * crop]
        if not axes:
            raise ValueError(f"texture_crop_pairs: image {i} is {h} x {w}; two non-overlapping {crop} x {crop} "
                             f"crops need a side of at least {2 * crop} px")
        for _ in range(pairs_per_image):
            ax = axes[draw(len(axes) - 1)]
            size = (h, w)[ax]
            first = draw(size - 2 * crop)  # room for the second crop after the first
            second = first + crop + draw(size - 2 * crop - first)
            if draw(1):
                first, second = second, first
            other = (w, h)[ax] - crop
            pos = [(first, draw(other)), (second, draw(other))]
            if ax == 1:
                pos = [(y, x) for x, y in pos]
            (ya, xa), (yb, xb) = pos
            a_crops.append(img[:, ya:ya + crop, xa:xa + crop])
            b_crops.append(img[:, yb:yb + crop, xb:xb + crop])
    if not a_crops:
        raise ValueError("texture_crop_pairs: no images given")
    return [(torch.stack(a_crops[k:k + batch_size]), torch.stack(b_crops[k:k + batch_size]))
            for k in range(0, len(a_crops), batch_size)]


@torch.no_grad()
def collect_terms(
    measure: FidelityMeasure, pairs: Iterable[tuple[torch.Tensor, ...]], scored: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the frozen backbone once over (dist, ref, score) batches (or (crop_a, crop_b) batches
    with scored=False) -> (S1, S2, scores or None) on CPU."""
    device = measure.alpha.device
    what = "(dist, ref, score)" if scored else "(crop_a, crop_b)"
    s1s, s2s, scores = [], [], []
    for i, batch in enumerate(pairs):
        if len(batch) != (3 if scored else 2):
            raise ValueError(f"pairs[{i}]: expected {what}, got {len(batch)} items")
        s1, s2 = measure.similarity_terms(batch[0].to(device), batch[1].to(device))
        s1s.append(s1.cpu())
        s2s.append(s2.cpu())
        if scored:
            scores.append(torch.as_tensor(batch[2], dtype=torch.float32).flatten().cpu())
            if scores[-1].numel() != s1.shape[0]:
                raise ValueError(f"pairs[{i}]: {s1.shape[0]} image pairs but {scores[-1].numel()} scores")
    if not s1s:
        raise ValueError(f"fit_alpha_beta: no {what} batches given")
    return torch.cat(s1s), torch.cat(s2s), torch.cat(scores) if scored else None


def fit_alpha_beta(
    measure: FidelityMeasure,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int = 500,
    lr: float = 1e-2,
    higher_better: bool = True,
    rank_weight: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
    texture_pairs: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    texture_weight: float = 1.0,
) -> dict:
    """Fit alpha/beta (kept >= 0, sum 1) with DISTS's two-part objective.

    MOS agreement on pairs: batches of (dist N x 3 x H x W, ref, score N); higher_better: scores
    are MOS (the fit makes the distance anti-correlate with them) or DMOS (False). Per minibatch
    of images: (1 - PLCC(q, score)) + rank_weight * pairwise logistic ranking loss, q = -distance.
    Texture-resampling invariance on texture_pairs: batches of (crop_a, crop_b), two
    non-overlapping crops of one texture-rich image (texture_crop_pairs), which should score ~0:
    texture_weight * mean D(crop_a, crop_b) / mean D(dist, ref) over the minibatches. The ratio
    keeps the term scale-free like the MOS term: both are unchanged by scaling all distances, so
    the fit cannot lower absolute texture distances by moving weight to channels that never differ
    (that would shrink every distance and leave PLCC as it was); it must find channels that are
    invariant to resampling a texture yet sensitive to distortions. texture_pairs=None (or
    texture_weight=0) fits the MOS term alone: that is not DISTS's fit.
    Projected Adam: a clamp to >= 0 after each step (the released DISTS weights are non-negative
    with exact zeros, consistent with such a projection). The backbone runs once per pair
    (collect_terms); steps only touch N x sum(C) matrices.
    Returns {"n", "n_texture", "texture_weight", "steps", "loss", "plcc_before", "plcc_after",
    "srcc_before", "srcc_after", "texture_ratio_before", "texture_ratio_after"}: correlations of
    the oriented quality with the scores; texture ratio = mean texture-pair distance / mean
    distorted-pair distance over all pairs (NaN without texture pairs).
    """
    if texture_weight < 0:
        raise ValueError(f"fit_alpha_beta: texture_weight must be >= 0, got {texture_weight}")
    s1, s2, y = collect_terms(measure, pairs)
    n = y.numel()
    if n < 3:
        raise ValueError(f"fit_alpha_beta: need at least 3 scored pairs, got {n}")
    if float(y.std()) == 0:
        raise ValueError("fit_alpha_beta: all scores are equal; there is nothing to agree with")
    tex_gaps = None
    if texture_pairs is not None and texture_weight > 0:
        t1, t2, _ = collect_terms(measure, texture_pairs, scored=False)
        tex_gaps = 1 - torch.cat([t1, t2], 1)
    sign = -1.0 if higher_better else 1.0  # orient: q = sign * distance correlates positively with y
    y = (y - y.mean()) / (y.std() + 1e-12)

    # Scale-free parameterisation: distance depends on alpha/beta only through alpha/sum, so
    # start at mean weight 1 where a fixed learning rate makes sense; renormalise at the end.
    a0, b0 = measure.normalized_weights()
    total = 2 * a0.numel()
    w = (torch.cat([a0, b0]).detach().cpu().double() * total).float().requires_grad_(True)
    gaps = 1 - torch.cat([s1, s2], 1)  # n x 2C; distance = gaps @ w / sum(w)

    def distance(g: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return g @ weights / weights.sum()

    def texture_ratio(weights: torch.Tensor) -> float:
        if tex_gaps is None:
            return float("nan")
        return float(distance(tex_gaps, weights).mean() / distance(gaps, weights).mean().clamp_min(1e-12))

    with torch.no_grad():
        q0 = sign * distance(gaps, w)
        before = (float(_plcc(q0, y)), _srcc(q0, y), texture_ratio(w))
    opt = torch.optim.Adam([w], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        rows = torch.randperm(n, generator=gen)[: min(batch_size, n)]
        d = distance(gaps[rows], w)
        q, t = sign * d, y[rows]
        dq, dt = q[:, None] - q[None, :], t[:, None] - t[None, :]
        # Logistic ranking loss over ordered pairs (scale-free in q after standardising).
        qs = dq / (q.std() + 1e-8)
        mask = dt > 0
        rank = nn.functional.softplus(-qs[mask]).mean() if mask.any() else q.sum() * 0
        loss = (1 - _plcc(q, t)) + rank_weight * rank
        if tex_gaps is not None:
            tex_rows = torch.randperm(tex_gaps.shape[0], generator=gen)[: min(batch_size, tex_gaps.shape[0])]
            loss = loss + texture_weight * distance(tex_gaps[tex_rows], w).mean() / d.mean().clamp_min(1e-12)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0)
            if w.sum() <= 0:  # all weights projected away: restart from uniform
                w.fill_(1.0)
    with torch.no_grad():
        q1 = sign * distance(gaps, w)
        after = (float(_plcc(q1, y)), _srcc(q1, y), texture_ratio(w))
        final = w / w.sum()
        c = a0.numel()
        measure.alpha.copy_(final[:c].view_as(measure.alpha).to(measure.alpha))
        measure.beta.copy_(final[c:].view_as(measure.beta).to(measure.beta))
    return {
        "n": n,
        "n_texture": 0 if tex_gaps is None else int(tex_gaps.shape[0]),
        "texture_weight": float(texture_weight) if tex_gaps is not None else 0.0,
        "steps": steps,
        "loss": float(loss.detach()),
        "plcc_before": before[0],
        "srcc_before": before[1],
        "plcc_after": after[0],
        "srcc_after": after[1],
        "texture_ratio_before": before[2],
        "texture_ratio_after": after[2],
    }
