"""
Connections to origins and backends: the keep-alive pool.
"""
