"""FER+ loading, batched augmentation and ContraWarping's local warps (all on tensors, CPU or GPU)."""
import csv
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from nets import EMOTIONS

SIZE = 48


class FerPlus:
    """FER2013 pixels with FER+ votes (`../shared/data/ferplus` layout: images.u8 + labels.csv)."""

    def __init__(self, root):
        self.root = root
        imgs = np.fromfile(os.path.join(root, "images.u8"), np.uint8)
        self.images = imgs.reshape(-1, SIZE, SIZE)
        self.split, self.label, self.raw, votes = [], [], [], []
        with open(os.path.join(root, "labels.csv"), newline="") as f:
            for row in csv.DictReader(f):
                self.split.append(row["split"])
                self.raw.append(row["label"])
                self.label.append(EMOTIONS.index(row["label"]) if row["label"] in EMOTIONS else -1)
                votes.append([int(row["votes_" + e]) for e in EMOTIONS])
        self.split = np.array(self.split)
        self.raw = np.array(self.raw)
        self.label = np.array(self.label)
        self.votes = np.array(votes, np.float32)
        assert len(self.label) == len(self.images), "labels.csv and images.u8 disagree"
        self._on = (None, None, None)  # (device, faces, vote shares) kept there by `_resident`

    def add_unlabelled(self, root):
        """Faces without labels (a site's, written by `examples/face_crops.rs` in this layout: images.u8 with a
        labels.csv of one row per face) appended as split `extra`: only SSL reads them. Returns their count."""
        imgs = np.fromfile(os.path.join(root, "images.u8"), np.uint8)
        if imgs.size == 0 or imgs.size % (SIZE * SIZE):
            raise SystemExit(f"{root}/images.u8: {imgs.size} bytes, not a whole number of {SIZE}x{SIZE} faces")
        imgs = imgs.reshape(-1, SIZE, SIZE)
        n = len(imgs)
        self.images = np.concatenate([self.images, imgs])
        self.split = np.concatenate([self.split, np.full(n, "extra")])
        self.raw = np.concatenate([self.raw, np.full(n, "unknown")])
        self.label = np.concatenate([self.label, np.full(n, -1)])
        self.votes = np.concatenate([self.votes, np.zeros((n, self.votes.shape[1]), np.float32)])
        self._on = (None, None, None)
        return n

    def indices(self, split, labelled=True):
        """Rows of a split; labelled=True keeps the FER+ benchmark rows (one of the 8 emotions)."""
        m = self.split == split
        if labelled:
            m &= self.label >= 0
        return np.nonzero(m)[0]

    def soft_indices(self, split):
        """Rows with at least one emotion vote (soft-label training uses `unknown` rows too, never NF-majority)."""
        return np.nonzero((self.split == split) & (self.votes.sum(1) > 0) & (self.raw != "NF"))[0]

    def soft(self, idx):
        v = self.votes[idx]
        return v / v.sum(1, keepdims=True)

    def train_prior(self):
        """The class prior of the train split's votes (floored at 1e-4, so its log is finite): what a logit
        adjustment -t*log(prior) divides out."""
        return np.maximum(self.soft(self.soft_indices("train")).mean(0), 1e-4)

    def batch(self, idx, device="cpu"):
        """Faces `idx` as floats in [0, 1], shape (N, 1, 48, 48), on `device`."""
        if torch.device(device).type == "cpu":
            return torch.from_numpy(self.images[idx].astype(np.float32) / 255.0).unsqueeze(1)
        images, _ = self._resident(device)
        return images[self.rows_on(idx, device)].float().div_(255.0).unsqueeze(1)

    def soft_on(self, idx, device="cpu"):
        """`soft(idx)` as a tensor on `device`."""
        if torch.device(device).type == "cpu":
            return torch.from_numpy(self.soft(idx))
        _, soft = self._resident(device)
        return soft[self.rows_on(idx, device)]

    # On a GPU the faces (82 MB as bytes) and the vote shares stay there, indexed in place: a batch copied from host
    # memory makes the host wait for the GPU at every step (PyTorch synchronizes after a blocking copy), so no two
    # steps overlap. The indices travel without that wait (cudaMemcpyAsync stages pageable memory at once).
    def _resident(self, device):
        key = str(torch.device(device))
        if self._on[0] != key:
            votes = self.votes / np.maximum(self.votes.sum(1, keepdims=True), 1e-12)  # rows without votes: zeros
            self._on = (key, torch.from_numpy(self.images).to(device), torch.from_numpy(votes).to(device))
        return self._on[1], self._on[2]

    @staticmethod
    def rows_on(idx, device):
        """Row numbers `idx` as an int64 tensor on `device`, copied without waiting for the GPU."""
        return torch.from_numpy(np.ascontiguousarray(idx, np.int64)).to(device, non_blocking=True)


def standardize(x, eps=1e-3):
    """Per-image standardization (zero mean, unit std): the firmware does exactly this (src/expression)."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    s = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - m) / (s + eps)


def identity_grid(n, size, device):
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=device).expand(n, 2, 3)
    return F.affine_grid(theta, (n, 1, size, size), align_corners=False)


def global_params(n, device, strong=True):
    """Random global transform: rotation, scale, translation, flip (all keep the expression)."""
    r = lambda lo, hi: torch.empty(n, device=device).uniform_(lo, hi)
    rot = r(-12, 12) * math.pi / 180 if strong else r(-8, 8) * math.pi / 180
    scale = r(0.85, 1.12) if strong else r(0.92, 1.08)
    tx, ty = r(-0.08, 0.08), r(-0.08, 0.08)
    flip = torch.where(r(0, 1) < 0.5, -1.0, 1.0)
    c, s = torch.cos(rot) / scale, torch.sin(rot) / scale
    theta = torch.stack([torch.stack([c * flip, -s, tx], 1), torch.stack([s * flip, c, ty], 1)], 1)
    return theta


def photometric(x, strong=True):
    """Gamma, blur from low resolution (small faces in real footage), noise, occasional cutout."""
    n = x.shape[0]
    dev = x.device
    gamma = torch.exp(torch.empty(n, 1, 1, 1, device=dev).uniform_(-0.5, 0.5))
    x = x.clamp(1e-4, 1) ** gamma
    if strong:
        # Resolution drop: faces far from the camera reach the model as upscaled 14-40 px crops. Masks select per
        # image (no host sync: on a GPU the next batch's kernels queue while this one runs).
        low = (torch.rand(n, 1, 1, 1, device=dev) < 0.35).to(x.dtype)
        k = int(torch.randint(14, 40, (1,)).item())
        y = F.interpolate(x, size=(k, k), mode="bilinear", align_corners=False, antialias=True)
        x = torch.lerp(x, F.interpolate(y, size=(SIZE, SIZE), mode="bilinear", align_corners=False), low)
        x = x + torch.randn_like(x) * torch.empty(n, 1, 1, 1, device=dev).uniform_(0, 0.03)
        contrast = torch.empty(n, 1, 1, 1, device=dev).uniform_(0.6, 1.4)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * contrast + m + torch.empty(n, 1, 1, 1, device=dev).uniform_(-0.15, 0.15)
        cut = torch.rand(n, 1, 1, 1, device=dev) < 0.25
        cy, cx = torch.randint(0, SIZE, (2,)).tolist()
        h = 10
        box = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool, device=dev)
        box[..., max(0, cy - h // 2):cy + h // 2, max(0, cx - h // 2):cx + h // 2] = True
        x = torch.where(cut & box, x.mean(dim=(1, 2, 3), keepdim=True), x)
    return x.clamp(0, 1)


def light_field(n, size, angle, low, sharp, shift, device="cpu"):
    """A gain field for uneven light on a face (n, 1, size, size): 1 on the lit side, `low` on the other, along
    the direction `angle` (radians; 0: lit from the right, pi/2: from below). `sharp` 0 is a linear ramp across
    the face (a lamp to one side); larger values make a soft-edged shadow (steeper at 10+), its edge `shift` of
    the half-width off centre. Each argument is a tensor of n values."""
    t = torch.linspace(-1, 1, size, device=device)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    v = lambda z: z.view(n, 1, 1, 1)
    proj = torch.cos(v(angle)) * xx + torch.sin(v(angle)) * yy
    ramp = ((proj + 1) / 2).clamp(0, 1)
    step = torch.sigmoid(v(sharp) * (proj - v(shift)))
    s = torch.where(v(sharp) > 0, step, ramp)
    return v(low) + (1 - v(low)) * s


def blur_kernels(n, k, device):
    """Per-face blur kernels (n, 1, k, k), sums 1: half motion blur (a line of 2-7 px at a random angle), half
    defocus (a Gaussian, sigma 0.5-1.8 px), at the model's 48 px."""
    t = torch.arange(k, device=device, dtype=torch.float32) - k // 2
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    u = lambda lo, hi: torch.empty(n, 1, 1, device=device).uniform_(lo, hi)
    ang, length, sigma = u(0, math.pi), u(2, 7), u(0.5, 1.8)
    # Distance of each tap from a centred segment of `length` at `ang`: taps within half a pixel of it weigh 1.
    along = xx * torch.cos(ang) + yy * torch.sin(ang)
    across = -xx * torch.sin(ang) + yy * torch.cos(ang)
    d = torch.sqrt(across ** 2 + (along.abs() - length / 2).clamp_min(0) ** 2)
    line = (1 - d).clamp_min(0)
    gauss = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    ker = torch.where(torch.rand(n, 1, 1, device=device) < 0.5, line, gauss)
    return (ker / ker.sum((1, 2), keepdim=True)).unsqueeze(1)


def camera_effects(x, p):
    """What a line camera does to a face beyond the recipe's photometric jitter, for a share `p` of the faces,
    each effect at random (probability 1/2 each): uneven light (a ramp or a soft shadow from any side, the dark
    side at 20-90%), motion or focus blur, and exposure - overexposed with clipped highlights, or underexposed
    with shot and read noise and 8-bit steps before the camera's gain. Masks select per face (no host sync)."""
    n, _, h, w = x.shape
    dev = x.device
    pick = lambda: torch.rand(n, 1, 1, 1, device=dev) < 0.5
    on = torch.rand(n, 1, 1, 1, device=dev) < p
    u = lambda lo, hi: torch.empty(n, device=dev).uniform_(lo, hi)
    # Light: half the fields are linear ramps (sharp 0), half soft-edged shadows.
    sharp = torch.where(torch.rand(n, device=dev) < 0.5, torch.zeros(n, device=dev), u(3, 15))
    lit = x * light_field(n, h, u(0, 2 * math.pi), u(0.2, 0.9), sharp, u(-0.3, 0.3), dev)
    x = torch.where(on & pick(), lit, x)
    k = 9
    blurred = F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate").view(1, n, h + k - 1, w + k - 1),
                       blur_kernels(n, k, dev), groups=n).view(n, 1, h, w)
    x = torch.where(on & pick(), blurred, x)
    # Exposure: over (gain 1.3-2.2, clipped) or under (20-50% of full exposure on a small sensor, gained back).
    over = (x * u(1.3, 2.2).view(n, 1, 1, 1)).clamp(0, 1)
    level = u(0.2, 0.5).view(n, 1, 1, 1)
    e = x * level * 400
    e = e + torch.randn_like(e) * torch.sqrt(e.clamp_min(0) + 9)  # shot noise (Gaussian approx.) + read noise 3 e-
    under = (torch.round((e / 400).clamp(0, 1) * 255) / 255) / level
    expo = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.5, over, under)
    x = torch.where(on & pick(), expo, x)
    return x.clamp(0, 1)


def framing(x, p, scale=(0.7, 1.4), shift=0.1):
    """Another tool's crop convention for a share `p` of the faces: a square `s` times the crop's side (s
    log-uniform in `scale`: 0.7 cuts tighter, 1.4 looser), its centre moved by up to `shift` of the side down/up and
    left/right, the edge pixels repeated where it runs off the face, as the firmware's crop path and
    `robust.reframe` do. The other faces come back as they were (an identity grid samples pixel centres)."""
    n = x.shape[0]
    dev = x.device
    on = (torch.rand(n, device=dev) < p).to(x.dtype)
    u = lambda lo, hi: torch.empty(n, device=dev).uniform_(lo, hi)
    s = 1 + (torch.exp(u(math.log(scale[0]), math.log(scale[1]))) - 1) * on
    dx, dy = 2 * shift * u(-1, 1) * on, 2 * shift * u(-1, 1) * on  # normalized coordinates: the side is 2
    z = torch.zeros_like(s)
    theta = torch.stack([torch.stack([s, z, dx], 1), torch.stack([z, s, dy], 1)], 1)
    return apply_global(x, theta)


def apply_global(x, theta):
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# Where expression lives in a FER-style crop (normalized [-1, 1] coords, x right, y down): FER2013 crops are
# roughly aligned by the face detector that cut them, so fixed anchors with jitter land on the right parts.
ANCHORS = {
    "brow_l": (-0.38, -0.42), "brow_r": (0.38, -0.42),
    "eye_l": (-0.36, -0.22), "eye_r": (0.36, -0.22),
    "mouth_l": (-0.28, 0.48), "mouth_r": (0.28, 0.48), "mouth_c": (0.0, 0.50), "lip_u": (0.0, 0.38),
}


def local_warp(x, amp=(0.07, 0.16), parts=(1, 4)):
    """Random smooth local warps around brows, eyes and mouth: they change the expression (ContraWarping's
    negatives). Each part moves by a random vector (amp of the half-width) under a Gaussian envelope."""
    n, _, h, w = x.shape
    dev = x.device
    grid = identity_grid(n, h, dev)
    disp = torch.zeros_like(grid)
    names = list(ANCHORS)
    k = int(torch.randint(parts[0], parts[1] + 1, (1,)).item())
    for _ in range(k):
        sel = torch.randint(0, len(names), (n,), device=dev)
        centers = torch.tensor([ANCHORS[a] for a in names], device=dev)[sel]
        centers = centers + torch.empty_like(centers).uniform_(-0.08, 0.08)
        sigma = torch.empty(n, 1, 1, device=dev).uniform_(0.14, 0.26)
        ang = torch.empty(n, device=dev).uniform_(0, 2 * math.pi)
        mag = torch.empty(n, device=dev).uniform_(*amp)
        vec = torch.stack([torch.cos(ang), torch.sin(ang)], 1) * mag[:, None]
        d2 = ((grid - centers[:, None, None, :]) ** 2).sum(-1)
        env = torch.exp(-d2 / (2 * sigma ** 2))
        disp = disp + env[..., None] * vec[:, None, None, :]
    return F.grid_sample(x, grid + disp, mode="bilinear", padding_mode="border", align_corners=False)


def augment(x, strong=True):
    theta = global_params(x.shape[0], x.device, strong)
    return photometric(apply_global(x, theta), strong)
