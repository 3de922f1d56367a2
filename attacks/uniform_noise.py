"""``uniform_noise``: i.i.d. uniform noise of the attack's budget on every training input of one experience.

The baseline every poisoning table needs (BrainWash, Abbasi et al. CVPR 2024, reports it as
"uniform"): each input of the target experience gets ``delta ~ U(-epsilon, epsilon)`` per
element, and the result is clipped to the scenario's valid input range (Fashion-MNIST and digits:
[0, 1]; the Swiss roll has no fixed range and is not clipped). Labels are untouched.
``epsilon = 0`` returns the clean data bit for bit. The noise comes from the attack's own
generator (run seed + experience index), so the victim's training randomness is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_bench.attack import Attack, attack_generator, clip_to_range, experience_tensors, linf_budget, with_inputs
from cl_bench.config import ComponentConfig, param
from cl_bench.registry import ATTACKS
from cl_bench.traits import AttackTraits


@dataclass
class UniformNoiseConfig(ComponentConfig):
    epsilon: float = param(0.1, "L-infinity budget, in input units (Fashion-MNIST pixels in [0,1])", low=0.0)
    target_experience: int = param(-1, "index of the poisoned training experience; -1 = the last")


class UniformNoise(Attack):
    poisons_training = True

    def poison(self, experience, strategy):
        inputs, _, _ = experience_tensors(experience)
        if self.config.epsilon == 0:
            return experience
        generator = attack_generator(self.seed, experience.current_experience)
        noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * self.config.epsilon
        return with_inputs(experience, clip_to_range(inputs + noise, self.scenario.input_range), "uniform_noise")

    def budget(self) -> dict:
        return linf_budget(self.config.epsilon, self.scenario)


@ATTACKS.register(
    "uniform_noise",
    config=UniformNoiseConfig,
    traits=AttackTraits(
        phase="training",
        label_fields=("epsilon",),
        budget_field="epsilon",
        smoke=("scenario=split_digits", "train.epochs=1", "model.widths=[32]", "attack.epsilon=0.3"),
    ),
)
def build_uniform_noise(config: UniformNoiseConfig, scenario, seed: int) -> Attack:
    """Uniform noise U(-eps, eps) on every training input of one experience (the poisoning baseline)."""
    return UniformNoise(config, scenario, seed)
