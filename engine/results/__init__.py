"""Reading what jobs wrote (any process, no torch): scoring, metrics files, compare, lineage, export."""
