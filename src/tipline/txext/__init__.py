"""A python-threatexchange extension: tipline's exact PDQ index inside pytx and HMA.

Following pytx's extension convention, this module holds ``TX_MANIFEST``. Its signal
type :class:`~tipline.txext.pdq.TiplinePdqSignal` is pytx's ``pdq`` (same name, hashes
and comparisons) with :class:`~tipline.txext.pdq.TiplinePDQIndex` as its index: exact
Hamming search (recall 1.0) and serialization in tipline's segment format (no pickle).
Needs ``threatexchange`` installed (``pip install 'tipline[pytx]'``).
"""

from __future__ import annotations

from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest

from tipline.txext.pdq import TiplinePDQIndex, TiplinePdqSignal

TX_MANIFEST = ThreatExchangeExtensionManifest(signal_types=(TiplinePdqSignal,))

__all__ = ["TX_MANIFEST", "TiplinePDQIndex", "TiplinePdqSignal"]
