"""Resource accounting of ``TransformerLM``: parameters, FLOPs, memory and training time.

The CS336 assignment-1 problems ``transformer_accounting`` and ``adamwAccounting``, worked
out in code for any model preset, checked against the model itself:

- parameter counts against ``sum(p.numel())`` of the model built on the ``meta`` device,
- forward matmul FLOPs against ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors,
- activation memory against what autograd actually keeps for backward (a saved-tensor
  hook summing unique storages) on a small shape.

Three modules: :mod:`~lm.accounting.formulas` (the numbers, from a ``ModelConfig`` alone,
torch-free), :mod:`~lm.accounting.checks` (the same numbers measured on the model) and
:mod:`~lm.accounting.report` (the reports: ``write_reports(out_dir, presets)`` writes
``transformer.md``/``.json`` and ``adamw.md``/``.json``; ``lm accounting`` is its command
line). Counting conventions: a matmul of an
``m×n`` by an ``n×p`` matrix costs ``2mnp`` FLOPs; only matmuls are counted (norms,
softmax, RoPE and the like are O(tokens·d) or O(tokens·T) elementwise work, a few percent
at most); memory is float32 (4 bytes); GB is 10⁹ bytes.
"""

from __future__ import annotations

from lm.accounting.checks import (
    check_reports,
    count_forward_flops_with_torch,
    count_parameters_of_model,
    measure_activation_floats,
    measure_saved_tensors,
    measured_activation_check,
)
from lm.accounting.formulas import (
    ADAMW_FLOPS_PER_PARAMETER,
    BYTES_FP32,
    GB,
    GROUPS,
    activation_floats,
    activation_formula,
    activation_terms,
    adamw_memory,
    adamw_step_flops,
    ffn_width,
    flop_totals,
    forward_matmuls,
    implementation_saved_floats,
    largest_batch,
    parameter_counts,
    training_days,
)
from lm.accounting.report import (
    DEFAULT_MODELS,
    adamw_report,
    build_reports,
    render_adamw_md,
    render_transformer_md,
    transformer_report,
    write_reports,
)

__all__ = [
    "ADAMW_FLOPS_PER_PARAMETER",
    "BYTES_FP32",
    "DEFAULT_MODELS",
    "GB",
    "GROUPS",
    "activation_floats",
    "activation_formula",
    "activation_terms",
    "adamw_memory",
    "adamw_report",
    "adamw_step_flops",
    "build_reports",
    "check_reports",
    "count_forward_flops_with_torch",
    "count_parameters_of_model",
    "ffn_width",
    "flop_totals",
    "forward_matmuls",
    "implementation_saved_floats",
    "largest_batch",
    "measure_activation_floats",
    "measure_saved_tensors",
    "measured_activation_check",
    "parameter_counts",
    "render_adamw_md",
    "render_transformer_md",
    "training_days",
    "transformer_report",
    "write_reports",
]
