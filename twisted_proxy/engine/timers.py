# -*- test-case-name: tests.test_exchange -*-
"""
What a client connection's single timer is waiting for (see
L{twisted_proxy.engine.front.FrontProtocol.set_timer}).
"""

NO_TIMER = 0
#: a request head (408)
HEADER = 1
#: the next request on a keep-alive connection (close)
IDLE = 2
#: the upstream's response head (504, or a retry on another server)
WAIT = 3
#: any progress of the exchange (408, or the response cut short)
BODY = 4
#: a filter's Deferred verdict (503)
FILTER = 5
