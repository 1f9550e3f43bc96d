"""
twisted-proxy: a forward and reverse proxy built on Twisted.
"""

__version__ = "0.1.0"
