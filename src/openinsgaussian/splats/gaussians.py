"""``GaussianModel``: the raw 3D Gaussian parameters plus their activations.

Parameters live in one ``dict[str, nn.Parameter]`` with gsplat's names, so densification and the
optimisers treat every per-Gaussian attribute alike (the 6-d instance feature included):

========== ========= ==========================================================
name       shape     stored as
========== ========= ==========================================================
means      [N,3]     world position
scales     [N,3]     log of the per-axis standard deviation
quats      [N,4]     rotation quaternion (w, x, y, z), not necessarily unit
opacities  [N]       logit of the opacity
sh0        [N,1,3]   degree-0 spherical-harmonic coefficient (colour DC)
shN        [N,K-1,3] higher SH coefficients, K = (sh_degree + 1)^2 (15 for degree 3)
ins_feat   [N,6]     instance feature, initialised U[0,1) as OpenGaussian
========== ========= ==========================================================

Row ``i`` of every tensor is Gaussian ``i``; nothing here reorders rows, so in frozen-point mode
Gaussian ``i`` stays input point ``i``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi)); the renderer adds 0.5 after evaluation
PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN", "ins_feat")
INS_FEAT_DIM = 6


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel up to ``degree``: ``(degree + 1)^2``."""
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colour in [0,1] -> DC coefficient such that the renderer's ``SH_C0 * c + 0.5`` gives it back."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_sh0` (view-independent colour, before clamping)."""
    return sh0 * SH_C0 + 0.5


def knn_init_scales(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """3DGS initial scale per point: ``sqrt(mean squared distance to the k nearest neighbours)``.

    ``xyz [N,3]`` -> ``[N]`` (positive; duplicates are floored at 1e-7 of squared distance, as
    3DGS's ``simple-knn`` does). Uses scipy's cKDTree.
    """
    from scipy.spatial import cKDTree

    n = len(xyz)
    if n < 2:
        return np.full(n, 0.01, dtype=np.float64)
    kk = min(k, n - 1)
    tree = cKDTree(xyz.astype(np.float64))
    dist, _ = tree.query(xyz.astype(np.float64), k=kk + 1)  # first column is the point itself
    d2 = np.square(dist[:, 1:]).mean(axis=1)  # [N]
    return np.sqrt(np.maximum(d2, 1e-7))


class GaussianModel:
    """3D Gaussians as a dict of raw parameters with activation accessors.

    ``sh_degree`` is the maximal SH degree (it fixes the size of ``shN``); ``active_sh_degree`` is
    the degree currently rendered (3DGS raises it step by step during training).
    """

    def __init__(self, params: dict[str, Tensor], sh_degree: int = 3, active_sh_degree: int | None = None) -> None:
        missing = [k for k in PARAM_NAMES if k not in params]
        if missing:
            raise ConfigError(f"GaussianModel needs parameters {missing}")
        n = params["means"].shape[0]
        want = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
            "shN": (n, num_sh_bases(sh_degree) - 1, 3),
        }
        for k, shape in want.items():
            if tuple(params[k].shape) != shape:
                raise ConfigError(f"parameter '{k}' has shape {tuple(params[k].shape)}, expected {shape}")
        if params["ins_feat"].ndim != 2 or params["ins_feat"].shape[0] != n:
            raise ConfigError(f"parameter 'ins_feat' has shape {tuple(params['ins_feat'].shape)}, expected ({n}, D)")
        self.params: dict[str, nn.Parameter] = {
            k: v if isinstance(v, nn.Parameter) else nn.Parameter(v.detach().clone()) for k, v in params.items()
        }
        self.sh_degree = int(sh_degree)
        self.active_sh_degree = self.sh_degree if active_sh_degree is None else int(active_sh_degree)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray | Tensor,
        rgb: np.ndarray | Tensor | None = None,
        *,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        seed: int = 0,
        ins_feat_dim: int = INS_FEAT_DIM,
        device: torch.device | str = "cpu",
    ) -> GaussianModel:
        """3DGS initialisation from a point cloud ``xyz [N,3]`` with colours ``rgb [N,3]``.

        ``rgb`` is uint8 or float in [0,1] (grey when None). Colour -> SH DC, higher SH zero,
        isotropic scale from the 3 nearest neighbours, identity rotation, opacity ``init_opacity``,
        instance feature U[0,1) from a generator seeded with ``seed``.
        """
        xyz_np = np.asarray(xyz.detach().cpu().numpy() if isinstance(xyz, Tensor) else xyz, dtype=np.float64)
        if xyz_np.ndim != 2 or xyz_np.shape[1] != 3 or len(xyz_np) == 0:
            raise DataError(None, f"initial points must be a non-empty [N,3] array, got shape {xyz_np.shape}")
        if not np.isfinite(xyz_np).all():
            raise DataError(None, "initial points contain NaN or Inf", "clean the point cloud first")
        if not 0.0 < init_opacity < 1.0:
            raise ConfigError(f"init_opacity must lie in (0, 1), got {init_opacity}")
        n = len(xyz_np)
        if rgb is None:
            rgb_np = np.full((n, 3), 0.5)
        else:
            rgb_np = np.asarray(rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else rgb)
            if rgb_np.shape != (n, 3):
                raise DataError(None, f"point colours have shape {rgb_np.shape}, expected ({n}, 3)")
            rgb_np = rgb_np.astype(np.float64) / 255.0 if rgb_np.dtype == np.uint8 else rgb_np.astype(np.float64)
        scale = knn_init_scales(xyz_np)  # [N]
        f32 = dict(dtype=torch.float32, device=device)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        params = {
            "means": torch.tensor(xyz_np, **f32),  # [N,3]
            "scales": torch.tensor(np.log(scale), **f32)[:, None].repeat(1, 3),  # [N,3]
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0], **f32).repeat(n, 1),  # [N,4]
            "opacities": torch.full((n,), float(np.log(init_opacity / (1.0 - init_opacity))), **f32),  # [N]
            "sh0": rgb_to_sh0(torch.tensor(rgb_np, **f32))[:, None, :],  # [N,1,3]
            "shN": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3, **f32),  # [N,K-1,3]
            "ins_feat": torch.rand(n, ins_feat_dim, generator=gen).to(**f32),  # [N,6]
        }
        return cls(params, sh_degree=sh_degree, active_sh_degree=0)

    @classmethod
    def random_in_bounds(
        cls,
        lo: np.ndarray | tuple[float, float, float],
        hi: np.ndarray | tuple[float, float, float],
        n: int,
        *,
        seed: int = 0,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        ins_feat_dim: int = INS_FEAT_DIM,
        device: torch.device | str = "cpu",
    ) -> GaussianModel:
        """``n`` Gaussians uniform in the box ``[lo, hi]`` with random colours (scenes without points).

        As 3DGS on Blender scenes: random DC colours near grey, then the usual kNN scales.
        """
        lo_np, hi_np = np.asarray(lo, dtype=np.float64).reshape(3), np.asarray(hi, dtype=np.float64).reshape(3)
        if n <= 0 or not (hi_np > lo_np).all():
            raise ConfigError(f"random init needs n > 0 and hi > lo, got n={n}, lo={lo_np}, hi={hi_np}")
        rng = np.random.default_rng(seed)
        xyz = lo_np + rng.random((n, 3)) * (hi_np - lo_np)  # [n,3]
        # 3DGS draws SH DC in [0, 1/255); expressed as colour that is 0.5 + U[0, 1/255) * SH_C0.
        rgb = sh0_to_rgb(torch.from_numpy(rng.random((n, 3)) / 255.0)).numpy()
        return cls.from_points(xyz, rgb, sh_degree=sh_degree, init_opacity=init_opacity, seed=seed,
                               ins_feat_dim=ins_feat_dim, device=device)

    # ---- raw access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def num_gaussians(self) -> int:
        return len(self)

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(self.params.items())

    def __getitem__(self, name: str) -> nn.Parameter:
        return self.params[name]

    # ---- activations --------------------------------------------------------------------------
    @property
    def means(self) -> Tensor:
        """``[N,3]`` world positions."""
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        """``[N,3]`` positive standard deviations (exp of the stored log-scales)."""
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> Tensor:
        """``[N,4]`` unit quaternions (w, x, y, z)."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def opacities(self) -> Tensor:
        """``[N]`` opacities in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> Tensor:
        """``[N,K,3]`` all SH coefficients (DC first), as the renderer takes them."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    @property
    def ins_feat(self) -> Tensor:
        """``[N,D]`` raw instance features."""
        return self.params["ins_feat"]

    def colors_rgb(self) -> Tensor:
        """``[N,3]`` view-independent colour from the DC term, clamped to [0,1] (for previews)."""
        return sh0_to_rgb(self.params["sh0"][:, 0, :]).clamp(0.0, 1.0)

    # ---- rendering ----------------------------------------------------------------------------
    def render(
        self,
        camera: Any,
        *,
        features: Tensor | None = None,
        background: Tensor | None = None,
        backend: str = "auto",
        return_ids: bool = False,
    ) -> Any:
        """Render through :func:`openinsgaussian.render.render`.

        With ``features`` None the colour is the SH up to ``active_sh_degree``; otherwise the given
        per-Gaussian features ``[N,C]`` are composited. Returns the renderer's ``RenderOutput``.
        """
        from ..render import render

        if features is None:
            # All coefficients, as 3DGS: the inactive ones get zero gradients, so their Adam step
            # counts advance from the start exactly as in the reference implementation.
            return render(self.means, self.quats, self.scales, self.opacities, self.sh, camera,
                          sh_degree=self.active_sh_degree, background=background, backend=backend,
                          return_ids=return_ids)
        return render(self.means, self.quats, self.scales, self.opacities, features, camera,
                      background=background, backend=backend, return_ids=return_ids)

    # ---- training switches --------------------------------------------------------------------
    def requires_grad_(self, names: tuple[str, ...] | list[str], flag: bool) -> GaussianModel:
        """Turn gradients on/off for the named parameters (e.g. freeze geometry after stage 0)."""
        for k in names:
            self.params[k].requires_grad_(flag)
        return self

    def subset(self, index: Tensor) -> GaussianModel:
        """A new model (detached copies, no gradients) of the Gaussians ``index [S]`` (int ids or
        an ``[N]`` bool mask), with the same SH degrees: e.g. one selected object."""
        idx = index.to(self.device)
        params = {k: p.detach()[idx] for k, p in self.params.items()}
        out = GaussianModel(params, sh_degree=self.sh_degree, active_sh_degree=self.active_sh_degree)
        for p in out.params.values():
            p.requires_grad_(False)
        return out

    def to(self, device: torch.device | str) -> GaussianModel:
        for k, p in list(self.params.items()):
            self.params[k] = nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad)
        return self

    # ---- (de)serialisation --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors + ints; loadable with ``torch.load(weights_only=True)``."""
        return {
            "sh_degree": self.sh_degree,
            "active_sh_degree": self.active_sh_degree,
            "params": {k: p.detach().clone() for k, p in self.params.items()},
            "requires_grad": {k: bool(p.requires_grad) for k, p in self.params.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str | None = None) -> GaussianModel:
        try:
            params = {k: v.to(device) if device is not None else v for k, v in state["params"].items()}
            model = cls(params, sh_degree=int(state["sh_degree"]), active_sh_degree=int(state["active_sh_degree"]))
            for k, flag in state.get("requires_grad", {}).items():
                model.params[k].requires_grad_(bool(flag))
        except (KeyError, AttributeError, TypeError) as e:
            raise ConfigError(f"not a GaussianModel state dict ({e})") from None
        return model

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace every parameter (the count may change: densified checkpoints)."""
        other = GaussianModel.from_state_dict(state, device=self.device)
        self.params.clear()
        self.params.update(other.params)
        self.sh_degree = other.sh_degree
        self.active_sh_degree = other.active_sh_degree

    def __repr__(self) -> str:
        return (f"GaussianModel(n={len(self)}, sh_degree={self.sh_degree}, "
                f"active_sh_degree={self.active_sh_degree}, device={self.device})")
