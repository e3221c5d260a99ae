"""The model zoo: plain torch.nn models with deterministic init, for tests, benchmarks, demo.

Every factory builds its model from a local seeded generator (torch's global RNG is left as it
was), returns it in eval mode, and gives a module torch.fx `symbolic_trace` can trace.
`ZOO` maps a name to a `ModelEntry` that also knows the model's example and calibration inputs.
"""

from .bert import bert_encoder
from .chain import residual_chain, residual_chain_for_nodes
from .digits import digits_cnn
from .lstm import lstm_text
from .mobilenet import mobilenet_v2
from .perceptron import mlp
from .registry import ZOO, ModelEntry, UnknownModelError, get
from .resnet import resnet18

__all__ = [
    "ZOO",
    "ModelEntry",
    "UnknownModelError",
    "bert_encoder",
    "digits_cnn",
    "get",
    "lstm_text",
    "mlp",
    "mobilenet_v2",
    "residual_chain",
    "residual_chain_for_nodes",
    "resnet18",
]
