"""Look inside any network: per-layer summary, MACs/FLOPs, receptive fields (traced and probed) and the
effective receptive field.

Everything except the ERF and the probe runs on the meta device (shapes only), and everything works on
any ``nn.Module`` -- a registered name, a module, or ``path/to/file.py:factory`` for a user's own net
(:func:`resolve_model`, which other commands may use too). Conventions are in docs/analysis.md.
"""

from __future__ import annotations

from ._common import default_input_size, resolve_model, shape_forward
from .erf import ERFResult, effective_receptive_field
from .flops import count_macs, macs_by_module
from .probe import ProbeResult, rf_probe
from .receptive_field import ReceptiveField, RFInfo, RFRow, receptive_field
from .summary import Summary, SummaryRow, summary

__all__ = [
    "summary", "Summary", "SummaryRow", "count_macs", "macs_by_module", "receptive_field", "ReceptiveField",
    "RFInfo", "RFRow", "rf_probe", "ProbeResult", "effective_receptive_field", "ERFResult", "resolve_model",
    "default_input_size", "shape_forward",
]
