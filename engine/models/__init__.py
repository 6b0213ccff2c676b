"""The model inventory (any process, no torch): the model-folder format, the ``Models/`` scan and its index, and model reference → folder."""
