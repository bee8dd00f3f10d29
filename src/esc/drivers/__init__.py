"""Side effects live here, each behind a small Protocol (drivers/base.py) with a fake."""
