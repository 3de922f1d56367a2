"""Scenario catalog."""

from scenarios import continual_swiss_roll  # noqa: F401
from scenarios import split_image  # noqa: F401
from scenarios import permuted_fmnist  # noqa: F401
from scenarios import task_free  # noqa: F401
from scenarios import imagenet_r  # noqa: F401
from scenarios import tabular  # noqa: F401
