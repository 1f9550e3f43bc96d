"""
Small complete extensions, used by the README and the C{etc/} examples.
"""
