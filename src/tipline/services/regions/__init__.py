"""The bank-side robust tier: entries added from media also match crops and small
rotations of their original.

* :mod:`.descriptors` - the region descriptors of a photo (reference decode, the grid of
  :mod:`tipline.signals.regions`), computed when media is added to a bank;
* :mod:`.index` - :class:`~tipline.services.regions.index.RegionIndex`: every stored
  descriptor, a memory-mapped index file (``<index dir>/regions``) plus a delta caught
  up from the database by change sequence, searched with a query's PDQ (as given and
  each of its variants) by the Matcher.

A region hit is reported only when the entry's bank has ``region_matching`` on, at the
bank's PDQ threshold (one global rule), after every exact-tier match, labelled
``tier="region"`` with the region's name and the distance.
"""
