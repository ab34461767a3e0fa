"""The review workflow people use (the web UI's use cases): the prioritised queue with
leases (:mod:`.queue`), one item with its match explanation (:mod:`.item`), blurred
rendering, reveals and daily exposure (:mod:`.media`), and verdicts (:mod:`.decisions`).
The queue's storage and the decision itself stay in :mod:`tipline.services.actions`."""
