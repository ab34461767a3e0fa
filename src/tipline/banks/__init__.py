"""Banks of known material: domain types, hash-list formats."""
