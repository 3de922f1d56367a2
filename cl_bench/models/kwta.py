"""k-winner-take-all (k-WTA) activations with heterogeneous dropout (HD).

Abbasi, Nooralinejad, Braverman, Pirsiavash, Kolouri, "Sparsity and Heterogeneous Dropout for
Continual Learning in the Null Space of Neural Activations", CoLLAs 2022 (PMLR 199:617-628),
arXiv 2203.06514.

k-WTA, for one sample's pre-activation z in R^n:
    kWTA(z)_j = z_j if z_j is among the k largest entries of z, else 0,     k = max(1, round(ratio * n)).
    The backward pass is the identity on the k winners and zero elsewhere (the mask is a constant).

Heterogeneous dropout, with A_j the cumulative number of training samples in which unit j was a winner:
    p_j = exp(-rho * A_j / max_i A_i)     (p = 1 when max_i A_i = 0 or rho = 0)
    Unit j is retained with probability p_j; dropped units cannot win, so the winners are chosen among
    the retained units: z -> HD mask -> k-WTA -> output. No 1/p rescaling, no mask in evaluation (the
    spec's recollection; both are flags, below).

Suite choices (not known from the paper; each behind a flag):
* [suite choice] `relu=True`: the layer computes kWTA(relu(z)), so negative winners output 0.
* [suite choice] conv maps: `conv_mode="global"` selects k winners over the flattened C*H*W map of each
  sample; `conv_mode="channel"` selects k = round(ratio * C) channels at every spatial location.
  1-D features are the same in both modes.
* [suite choice] `hd_sampling="bernoulli"`: an independent Bernoulli(p_j) mask per sample and unit,
  redrawn every training forward pass; `"subset"`: once per mini-batch, m = min(n, ceil(1.1 * k)) units
  drawn without replacement with probabilities proportional to p (per location in channel mode),
  shared by the whole batch (the variant seen in third-party code).
* [suite choice] guard (spec section 7): when k-WTA acts (k < group size), a sample (or, in channel
  mode, a sample's location) with fewer than k retained units keeps all its units. With k equal to
  the group size (ratio 1.0, plain ReLU: the HD-only ablation) there is no winner selection to
  protect and HD is plain heterogeneous dropout: dropped units output 0.
* [suite choice] counting: A_j is incremented on the outputs (!= 0) of every training forward pass, with
  the HD mask applied; never in eval mode. Keep-probabilities are recomputed from the cumulative counts
  only when `update_keep_probability` is called (by the strategy, at the end of each task).
* [suite flag] `rescale=True`: inverted dropout, retained units are scaled by 1/p_j in training (before the
  winner selection), so a unit's expected training output equals its evaluation output. Default off.
* [suite flag] `eval_mask="expected"`: in evaluation every unit's scores are multiplied by the keep-probability
  the latest task was trained with (`trained_keep_probability`, the mean of its training mask), before the
  winner selection, so evaluation sees on average what that task's training saw; the GPM representation pass
  and `count_on=clean`'s counting pass (both in eval mode) see it too. Default `"off"`: no mask in evaluation.
  With `rescale=True` the mean of the rescaled mask is 1, so the two flags are not combined.
* HD is applied only when `hd_enabled` and the module is in training mode, and it is skipped entirely
  (no random numbers drawn) while all keep-probabilities are 1, so that rho = 0 and ratio 1.0 reproduce
  the plain-ReLU training trajectory bitwise. Numenta-style boosting is not implemented (the paper does
  not use it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

CONV_MODES = ("global", "channel")
HD_SAMPLERS = ("bernoulli", "subset")
EVAL_MASKS = ("off", "expected")


def keep_probability(counts: torch.Tensor, rho: float) -> torch.Tensor:
    """p_j = exp(-rho * A_j / max_i A_i); all ones when max is 0 or rho == 0. Pure, float32 out."""
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    counts = counts.detach().to(torch.float64)
    largest = counts.max() if counts.numel() else counts.new_zeros(())
    if rho == 0 or largest.item() <= 0:
        return torch.ones(counts.shape, dtype=torch.float32, device=counts.device)
    # float64 so that the most-used unit gets exactly exp(-rho) before the float32 cast
    return torch.exp(-rho * counts / largest).to(torch.float32)


class KWTA(nn.Module):
    """ReLU replacement: k-WTA over each sample's units, optional heterogeneous dropout and winner counts."""

    # buffers registered in __init__ (nn.Module.__getattr__ would type them as Tensor | Module)
    activation_count: torch.Tensor
    keep_probability: torch.Tensor
    trained_keep_probability: torch.Tensor

    def __init__(
        self,
        ratio: float,
        feature_shape: tuple[int, ...],
        relu: bool = True,
        conv_mode: str = "global",
        hd_sampling: str = "bernoulli",
        subset_factor: float = 1.1,
        rescale: bool = False,
        eval_mask: str = "off",
    ):
        super().__init__()
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {conv_mode!r}")
        if hd_sampling not in HD_SAMPLERS:
            raise ValueError(f"hd_sampling must be one of {HD_SAMPLERS}, got {hd_sampling!r}")
        if eval_mask not in EVAL_MASKS:
            raise ValueError(f"eval_mask must be one of {EVAL_MASKS}, got {eval_mask!r}")
        if rescale and eval_mask != "off":
            raise ValueError("rescale and eval_mask='expected' both correct the train/eval mismatch; use one")
        if subset_factor < 1:
            raise ValueError(f"subset_factor must be >= 1, got {subset_factor}")
        self.feature_shape = tuple(int(size) for size in feature_shape)
        if conv_mode == "channel" and len(self.feature_shape) not in (1, 3):
            raise ValueError(f"conv_mode='channel' needs (C, H, W) features, got {self.feature_shape}")
        self.ratio = ratio
        self.relu = relu
        self.conv_mode = conv_mode
        self.hd_sampling = hd_sampling
        self.subset_factor = subset_factor
        self.rescale = rescale
        self.eval_mask = eval_mask
        num_units = math.prod(self.feature_shape)
        # a "group" is the set of units that compete with each other: the whole map, or the channels of one location
        self.per_location = conv_mode == "channel" and len(self.feature_shape) == 3
        self.group_size = self.feature_shape[0] if self.per_location else num_units
        self.k = min(self.group_size, max(1, round(ratio * self.group_size)))
        self.counting = True
        self.hd_enabled = False
        self.register_buffer("activation_count", torch.zeros(num_units, dtype=torch.float64))
        self.register_buffer("keep_probability", torch.ones(num_units, dtype=torch.float32))
        # the keep-probabilities the latest task trained with (keep_probability already serves the next task)
        self.register_buffer("trained_keep_probability", torch.ones(num_units, dtype=torch.float32))

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, group_size={self.group_size}, feature_shape={self.feature_shape}, relu={self.relu}, "
            f"conv_mode={self.conv_mode!r}, hd_sampling={self.hd_sampling!r}, rescale={self.rescale}, "
            f"eval_mask={self.eval_mask!r}"
        )

    # (N, *feature_shape) <-> (N, groups, group_size), so that top-k always runs over the last dim
    def _to_groups(self, t: torch.Tensor) -> torch.Tensor:
        if self.per_location:
            return t.reshape(t.shape[0], self.feature_shape[0], -1).transpose(1, 2)
        return t.reshape(t.shape[0], 1, -1)

    def _from_groups(self, t: torch.Tensor) -> torch.Tensor:
        if self.per_location:
            return t.transpose(1, 2).reshape(t.shape[0], *self.feature_shape)
        return t.reshape(t.shape[0], *self.feature_shape)

    def hd_active(self) -> bool:
        """HD masks are drawn only in training, when enabled, when some unit may be dropped and k-WTA can act."""
        if not (self.hd_enabled and self.training):
            return False
        return not bool(torch.all(self.keep_probability == 1))

    def eval_scaling_active(self) -> bool:
        """``eval_mask="expected"`` scales by the latest task's keep-probabilities in eval mode, when HD is on."""
        if not (self.hd_enabled and not self.training and self.eval_mask == "expected"):
            return False
        return not bool(torch.all(self.trained_keep_probability == 1))

    def sample_keep_mask(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Draw a bool keep mask of shape (batch_size, *feature_shape), guard applied. Uses the global RNG."""
        device = self.keep_probability.device if device is None else device
        probability = self._to_groups(self.keep_probability.to(device).unsqueeze(0))[0]  # (groups, group_size)
        if self.hd_sampling == "bernoulli":
            expanded = probability.unsqueeze(0).expand(batch_size, *probability.shape)
            keep = torch.bernoulli(expanded).bool()
        else:
            num_drawn = min(self.group_size, math.ceil(self.subset_factor * self.k))
            # sampling without replacement needs that many non-zero probabilities in every group
            num_drawn = min(num_drawn, int((probability > 0).sum(-1).min()))
            shared = torch.zeros(probability.shape, dtype=torch.bool, device=device)
            if num_drawn > 0:
                shared.scatter_(-1, torch.multinomial(probability, num_drawn), True)
            keep = shared.unsqueeze(0).expand(batch_size, *shared.shape)
        if self.k < self.group_size:
            # guard (spec section 7): a group with fewer than k retained units keeps all of them
            keep = keep | (keep.sum(-1, keepdim=True) < self.k)
        return self._from_groups(keep)

    @torch.no_grad()
    def winners(
        self, z: torch.Tensor, keep: torch.Tensor | None = None, already_rectified: bool = False
    ) -> torch.Tensor:
        """Bool mask of the k winners of each group among the retained units (`keep`, all units if None)."""
        scores = torch.relu(z) if self.relu and not already_rectified else z
        grouped = self._to_groups(scores.detach())
        if keep is not None:
            grouped = grouped.masked_fill(~self._to_groups(keep), float("-inf"))  # dropped units cannot win
        top = torch.topk(grouped, self.k, dim=-1, sorted=False).indices
        mask = torch.zeros(grouped.shape, dtype=torch.bool, device=z.device).scatter_(-1, top, True)
        if keep is not None:
            mask &= self._to_groups(keep)  # only matters if retained values are themselves -inf
        return self._from_groups(mask)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if tuple(z.shape[1:]) != self.feature_shape:
            raise ValueError(f"KWTA expects inputs of shape (N, {self.feature_shape}), got {tuple(z.shape)}")
        scores = torch.relu(z) if self.relu else z
        keep = self.sample_keep_mask(z.shape[0], z.device) if self.hd_active() else None
        if keep is not None and self.rescale:
            # inverted dropout: a retained unit has p_j > 0, so 1/p_j is finite; dropped units become 0
            probability = self.keep_probability.to(scores.device, scores.dtype).reshape(self.feature_shape)
            scores = scores * keep.to(scores.dtype) / probability
        elif self.eval_scaling_active():
            scores = scores * self.trained_keep_probability.to(scores.device, scores.dtype).reshape(self.feature_shape)
        if self.k == self.group_size:
            # every unit wins: untouched scores keep ReLU bitwise; HD alone is plain (heterogeneous) dropout
            output = scores if keep is None or self.rescale else scores * keep.to(scores.dtype)
        else:
            # the mask is a detached constant, so gradients flow through the winners only
            output = scores * self.winners(scores, keep, already_rectified=True).to(scores.dtype)
        if self.training and self.counting:
            with torch.no_grad():
                used = (output != 0).sum(0).reshape(-1)
                self.activation_count += used.to(self.activation_count.device, self.activation_count.dtype)
        return output

    @torch.no_grad()
    def update_keep_probability(self, rho: float) -> None:
        """Recompute the HD keep-probabilities from the cumulative winner counts (call at task end)."""
        self.trained_keep_probability.copy_(self.keep_probability)
        self.keep_probability.copy_(keep_probability(self.activation_count, rho))


def insert_kwta(backbone: nn.Module, input_shape: tuple[int, ...], ratios: list[float], **kwta_kwargs) -> list[KWTA]:
    """Replace every nn.ReLU in `backbone` (recursively, in module order) by a KWTA whose feature_shape is found by a
    dry forward pass of torch.zeros(2, *input_shape) through the backbone (forward hooks on the ReLUs, in eval mode,
    no grad, restoring the training flag). ratios[i] is the ratio of the i-th ReLU; the last ratio repeats for the
    rest. Returns the inserted modules in order."""
    if not ratios:
        raise ValueError("insert_kwta needs at least one ratio")
    relus = [(name, module) for name, module in backbone.named_modules() if isinstance(module, nn.ReLU)]
    if not relus:
        return []
    reference = next(backbone.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32

    shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name, _ in relus}

    def recorder(name: str):
        def hook(module, inputs, output):
            shapes[name].append(tuple(output.shape[1:]))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in relus]
    training_flags = {module: module.training for module in backbone.modules()}
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training_flags.items():
            module.training = flag

    inserted: list[KWTA] = []
    for index, (name, relu) in enumerate(relus):
        if not name:
            raise ValueError("insert_kwta cannot replace the backbone itself; wrap the ReLU in a container")
        if len(shapes[name]) != 1:
            # a ReLU called 0 or several times has no single feature shape to size the KWTA buffers
            raise ValueError(f"ReLU {name!r} ran {len(shapes[name])} times in the dry pass; need exactly once")
        ratio = ratios[min(index, len(ratios) - 1)]
        kwta = KWTA(ratio, shapes[name][0], **kwta_kwargs).to(device)
        kwta.train(training_flags[relu])
        parent_name, _, child_name = name.rpartition(".")
        setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child_name, kwta)
        inserted.append(kwta)
    return inserted
