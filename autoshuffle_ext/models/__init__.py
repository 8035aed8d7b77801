"""ShuffleNet v1 and v2 with a choice of channel shuffle (fixed, learned, sinkhorn, none)."""

from .complexity import Complexity, count_macs, count_parameters, input_resolution, measure
from .registry import (
    LIPSCHITZ_MODELS,
    MODEL_NAMES,
    build_model,
    check_model_name,
    model_name,
    parse_model_name,
)
from .shufflenet_v1 import ShuffleNetV1, ShuffleNetV1Unit, shufflenet_v1, v1_channels
from .shufflenet_v2 import ShuffleNetV2, ShuffleNetV2Unit, shufflenet_v2
from .stem import STEMS, make_stem

__all__ = [
    "LIPSCHITZ_MODELS",
    "MODEL_NAMES",
    "STEMS",
    "Complexity",
    "ShuffleNetV1",
    "ShuffleNetV1Unit",
    "ShuffleNetV2",
    "ShuffleNetV2Unit",
    "build_model",
    "check_model_name",
    "count_macs",
    "count_parameters",
    "input_resolution",
    "make_stem",
    "measure",
    "model_name",
    "parse_model_name",
    "shufflenet_v1",
    "shufflenet_v2",
    "v1_channels",
]
