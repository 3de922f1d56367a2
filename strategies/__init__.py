"""Strategy catalog: one module per strategy family, imported here so it registers."""

from strategies import baselines  # noqa: F401
from strategies import gpm  # noqa: F401
from strategies import gpm_sparse  # noqa: F401
from strategies import slca  # noqa: F401
from strategies import online_lora  # noqa: F401
from strategies import pretrained_baselines  # noqa: F401
from strategies import l2p  # noqa: F401
