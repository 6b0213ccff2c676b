"""What runs inside a job process — the only subpackage that imports torch, transformers, peft, trl and the quantizers."""
