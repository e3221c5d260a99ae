"""The testing kit shipped to users: Hypothesis strategies and stage laws.

- `purequant.testing.strategies`: random valid graphs (`graphs()`, built from plain-data
  recipes) and small real models (`model_recipes()`, `build_model`, `example_input`).
  Needs `hypothesis`.
- `purequant.testing.laws`: checks every stage should pass (well-formed, pure, deterministic,
  no-op identity, idempotent), for property-testing your own transforms.

Submodules are imported explicitly, so `purequant.testing.laws` works without Hypothesis.
"""
