"""Model catalog: one module per backbone family, imported here so it registers."""

from cl_bench.models import cnn, mlp  # noqa: F401
from cl_bench.models import gpm_nets  # noqa: F401
from cl_bench.models import vit  # noqa: F401
from cl_bench.models import avit  # noqa: F401
