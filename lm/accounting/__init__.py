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

from lm._lazy import lazy_exports

# public name -> defining module, imported on first use: importing one module of the
# package (the torch-free formulas, say) does not import the others, so a rule whose code
# uses the formulas does not change version when the reports do (lm.codeversion)
_EXPORTS = {
    "check_reports": "lm.accounting.checks",
    "count_forward_flops_with_torch": "lm.accounting.checks",
    "count_parameters_of_model": "lm.accounting.checks",
    "measure_activation_floats": "lm.accounting.checks",
    "measure_saved_tensors": "lm.accounting.checks",
    "measured_activation_check": "lm.accounting.checks",
    "ADAMW_FLOPS_PER_PARAMETER": "lm.accounting.formulas",
    "BYTES_FP32": "lm.accounting.formulas",
    "GB": "lm.accounting.formulas",
    "GROUPS": "lm.accounting.formulas",
    "activation_floats": "lm.accounting.formulas",
    "activation_formula": "lm.accounting.formulas",
    "activation_terms": "lm.accounting.formulas",
    "adamw_memory": "lm.accounting.formulas",
    "adamw_step_flops": "lm.accounting.formulas",
    "ffn_width": "lm.accounting.formulas",
    "flop_totals": "lm.accounting.formulas",
    "forward_matmuls": "lm.accounting.formulas",
    "implementation_saved_floats": "lm.accounting.formulas",
    "largest_batch": "lm.accounting.formulas",
    "parameter_counts": "lm.accounting.formulas",
    "training_days": "lm.accounting.formulas",
    "DEFAULT_MODELS": "lm.accounting.report",
    "adamw_report": "lm.accounting.report",
    "build_reports": "lm.accounting.report",
    "render_adamw_md": "lm.accounting.report",
    "render_transformer_md": "lm.accounting.report",
    "transformer_report": "lm.accounting.report",
    "write_reports": "lm.accounting.report",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
