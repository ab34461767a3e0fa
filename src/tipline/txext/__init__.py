"""A python-threatexchange extension: tipline's exact PDQ index inside pytx and HMA.

Following pytx's extension convention, this module holds ``TX_MANIFEST``, which
``threatexchange config extensions add tipline.txext`` loads: its signal type
:class:`~tipline.txext.pdq.TiplineHashedPdqSignal` (``tipline_pdq``) is PDQ hashed by
tipline and indexed by :class:`~tipline.txext.pdq.TiplinePDQIndex`: exact Hamming
search (recall 1.0) and serialization in tipline's segment format (no pickle). The CLI
always loads pytx's own ``pdq``, so the manifest cannot replace it; in HMA's storage
configuration, where signal types are listed, :class:`~tipline.txext.pdq.TiplinePdqSignal`
(pytx's ``pdq`` with tipline's index) replaces ``PdqSignal``. Its second type,
:class:`~tipline.txext.vpdq.TiplineVpdqSignal` (``tipline_vpdq``), is vPDQ hashed by
tipline and matched by :class:`~tipline.txext.vpdq.TiplineVPDQIndex` (tipline's video
index, pytx's ``VPDQIndex`` thresholds).
Needs ``threatexchange`` installed (``pip install 'tipline[pytx]'``).
"""

from __future__ import annotations

from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest

from tipline.txext.pdq import TiplineHashedPdqSignal, TiplinePDQIndex, TiplinePdqSignal
from tipline.txext.vpdq import TiplineVPDQIndex, TiplineVpdqSignal

TX_MANIFEST = ThreatExchangeExtensionManifest(
    signal_types=(TiplineHashedPdqSignal, TiplineVpdqSignal)
)

__all__ = [
    "TX_MANIFEST",
    "TiplineHashedPdqSignal",
    "TiplinePDQIndex",
    "TiplinePdqSignal",
    "TiplineVPDQIndex",
    "TiplineVpdqSignal",
]
