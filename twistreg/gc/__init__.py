"""
Garbage collection while the registry serves: what no tag reaches, V1 and V2, is removed once
it is older than a grace period and still unreached when checked again just before removal.
"""
