"""The lowering rules, as an immutable table: target -> handler -> rule.

A rule is `rule(sweep, match) -> QVal | Ref`: it emits the nodes computing the match's output
(the last one under the match root's id) and returns the output's new form, or raises
`CannotLower(reason)` before emitting anything that matters. Handler names are the pattern
table's (`PatternEntry.handler`); a handler missing here leaves its matches in float, with the
reason recorded. Pass your own table to `lower(..., rules=...)` to add or replace rules.
"""

from __future__ import annotations

from pyrsistent import PMap, pmap

from .rules_dynamic import (
    native_dynamic_linear,
    native_dynamic_rnn,
    native_weight_only_embedding,
    reference_dynamic_linear,
    reference_weight_only_embedding,
)
from .rules_flow import native_shares, reference_shares, reference_wrap, tensor_info
from .rules_ops import (
    native_batch_norm,
    native_binary,
    native_cat,
    native_default_op,
    native_fixed_qparams,
    native_matmul,
    native_norm,
)
from .rules_weighted import native_weighted, reference_weighted

NATIVE_RULES: PMap = pmap({
    "conv": native_weighted,
    "conv_transpose": native_weighted,
    "conv_add": native_weighted,
    "linear": native_weighted,
    "binary_op": native_binary,
    "matmul": native_matmul,
    "cat": native_cat,
    "default_op": native_default_op,
    "fixed_qparams": native_fixed_qparams,
    "norm": native_norm,
    "batch_norm": native_batch_norm,
    "shares_qparams": native_shares,
    "tensor_info": tensor_info,
})

REFERENCE_RULES: PMap = pmap({
    "conv": reference_weighted,
    "conv_transpose": reference_weighted,
    "conv_add": reference_weighted,
    "linear": reference_weighted,
    "binary_op": reference_wrap,
    "matmul": reference_wrap,
    "cat": reference_wrap,
    "default_op": reference_wrap,
    "fixed_qparams": reference_wrap,
    "norm": reference_wrap,
    "batch_norm": reference_wrap,
    "shares_qparams": reference_shares,
    "tensor_info": tensor_info,
})

# Dynamic and weight-only rules (rules_dynamic). A dynamic match looks its rule up under
# "dynamic.<handler>"; weight-only Embedding/EmbeddingBag (8- and 4-bit rows) take "embedding".
NATIVE_RULES = NATIVE_RULES.update({
    "dynamic.linear": native_dynamic_linear,
    "dynamic.rnn_dynamic": native_dynamic_rnn,
    "embedding": native_weight_only_embedding,
})
REFERENCE_RULES = REFERENCE_RULES.update({
    "dynamic.linear": reference_dynamic_linear,
    "embedding": reference_weight_only_embedding,
})

RULES: PMap = pmap({"native": NATIVE_RULES, "reference": REFERENCE_RULES})
