"""How pure stages see a module: its type and hyperparameters as plain data.

The torch.fx boundary reads every `call_module` target of the user's model into a ModuleSpec;
stages (matching, fusion, lowering) read specs, never `nn.Module` objects. Parameters stay in
the params table; a spec names them by path.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, pmap

from .node import as_pmap


@frozen
class ModuleSpec:
    """A module as plain data.

    Attributes:
        type: qualified class name (`torch.nn.Conv2d`, `mypkg.layers.Block`).
        attrs: plain hyperparameters (in_channels, stride, eps, training, ...): ints, floats,
            bools, strings, None and tuples of those.
        params: local parameter/buffer name -> path in the params table
            (`"weight" -> "layer1.0.conv1.weight"`); None for a declared-but-absent one
            (e.g. a conv built with bias=False).
    """

    type: str
    attrs: PMap = field(factory=pmap, converter=as_pmap)
    params: PMap = field(factory=pmap, converter=as_pmap)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def param(self, name: str) -> str | None:
        return self.params.get(name)
