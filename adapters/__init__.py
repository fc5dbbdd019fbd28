"""Framework adapters, installed as ``ts_defense.adapters`` (never as a top-level module)."""
