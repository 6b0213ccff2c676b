"""Reading what jobs wrote (any process, no torch): scoring, metrics files, model folders, compare, export."""
