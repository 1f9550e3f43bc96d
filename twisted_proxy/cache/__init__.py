"""
The shared HTTP cache (RFC 9111) and its body store.
"""
