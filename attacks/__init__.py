"""Attack catalog (training-time poisoning and test-time attacks). Each module registers itself."""

from attacks import uniform_noise  # noqa: F401
from attacks import brainwash  # noqa: F401
from attacks import adaptive_compute_patch  # noqa: F401
from attacks import vit_badnets  # noqa: F401
from attacks import vit_htba  # noqa: F401
