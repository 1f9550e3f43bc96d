"""
The admin listener: C{/metrics} (Prometheus), C{/status} (JSON), a small
dashboard page, and C{POST /reload} (certificates).
"""
