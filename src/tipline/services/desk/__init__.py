"""The clearinghouse analyst's desk: a received report as the desk shows it (files as
blurred thumbnails, the routing decision and the referral package preview), the
analyst's reveals of a file under the same wellness rules as review, and the decisions
taken from the desk (confirm or reject, route). The clearinghouse services do the work
(:mod:`tipline.services.clearinghouse`); this package adds what a person at a screen
needs around them."""
