"""A short pipeline schedule for the 8-view 64x48 tiny room (the synthetic preset is sized for the
default room). Tests start from this and change only what they exercise."""

TINY_PIPELINE: dict = {
    "threads": 1,
    "progress": False,
    "stage0.iterations": 200,
    "stage1.iterations": 150,
    "stage1.hard_pairs_after": 40,
    "stage1.lr": 1e-2,
    "stage2.coarse_iterations": 40,
    "stage2.fine_iterations": 80,
    "stage2.codebook.k1": 8,
    "stage2.codebook.k2": 4,
    "stage2.codebook.coarse_every": 20,
    "stage2.codebook.fine_every": 5,
    "stage2.codebook.root_every": 10,
    "stage2.k2_min_gaussians": 20,
}
