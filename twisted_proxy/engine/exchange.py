# -*- test-case-name: tests.test_exchange -*-
"""
One request and its response, as the client sees them.

An L{Exchange} carries a request through the stages of the engine, in order:

1. policy (C{ctx.policy}, L{twisted_proxy.engine.policy.RequestPolicy}):
   the listener's C{allow_clients}, the router's target, CONNECT ports, the
   filter chain; it calls L{Exchange.admitted} or L{Exchange.respond};
2. the request body transform, when a filter rewrites bodies
   (L{twisted_proxy.engine.transform.RequestTransform});
3. the origin (C{ctx.origin}): where the response comes from. The default,
   L{twisted_proxy.engine.upstream.UpstreamOrigin}, goes upstream (server
   choice, retries, pool, passive health); a cache takes this place and
   wraps it;
4. the response path: the origin delivers C{response_head},
   C{response_body} and C{response_end} to a sink: the exchange itself, or
   a response stage in front of it
   (L{twisted_proxy.engine.transform.ResponseFilters}).

The exchange owns what belongs to the client's side: the request body as
it arrives (handed to the current body consumer), the response framing for
the client, the proxy's own answers, the tunnel after CONNECT or a 101, and
the access-log line.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.engine.buffer import RequestBuffer, request_buffer_applies, request_limit
from twisted_proxy.engine.timers import BODY
from twisted_proxy.engine.transform import request_stage, response_stage
from twisted_proxy.flow import CONNECTING, FILTERING, write_soon, write_soon_sequence
from twisted_proxy.http import policy
from twisted_proxy.http.errors import error_response
from twisted_proxy.http.parser import BadResponse, RequestHead, ResponseHead, keep_served
from twisted_proxy.stats import note_refusal
from twisted_proxy.tunnel import Splice

log = Logger()

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])

#: what the client is told of the proxy-side failures (the log has the rest)
PUBLIC_MESSAGES = {
    500: "the proxy failed to handle this request",
    502: "the upstream server could not be reached or gave an invalid response",
    503: "no server can take this request now; try again later",
    504: "the upstream server did not answer in time",
    508: "this request would loop through the proxy",
}


class BadResponseForRequest(BadResponse):
    """
    A response that cannot answer the request it came for.
    """


class Exchange:
    """
    One request and its response.
    """

    __slots__ = (
        "front",
        "ctx",
        "head",
        "start_time",
        "target",
        "chain",
        "info",
        "waiting_on",
        "leg",
        "body",
        "pending",
        "request_done",
        "response_started",
        "response_done",
        "finished",
        "discard",
        "close_after",
        "status",
        "bytes_in",
        "bytes_out",
        "decision",
        "rule",
        "upstream",
        "out_framing",
        "out",
        "cache",
        "cleanup",
        "rbuf",
        "upstream_sent",
    )

    def __init__(self, front: Any, head: RequestHead) -> None:
        self.front = front
        self.ctx = front.ctx
        self.head = head
        self.start_time = front.clock.seconds()
        self.target: Any = None
        # set only when they apply (slots left unset cost nothing):
        # chain and info (filters; the policy stage), waiting_on (the
        # filter whose Deferred verdict is awaited), out_framing (once a
        # response head went out)
        #: the upstream leg, once the request went upstream
        self.leg: Any = None
        #: who takes the request body (C{request_body}, C{request_end})
        self.body: Any = None
        #: request body bytes that came before anyone takes them
        self.pending: Optional[list] = None
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.finished = False
        self.discard = False
        self.close_after = not head.keep_alive
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.decision = "allow"
        self.rule = ""
        self.upstream = ""
        #: response bytes collected during one upstream read (see emit)
        self.out: Optional[list] = None
        #: what the listener's cache did, for the access log
        self.cache = ""
        #: called once when the exchange ends, however it ends (an origin
        #: stage that holds something for it: a cache fill)
        self.cleanup: Any = None
        #: the response buffer, once the client pushed back (buffer.py)
        self.rbuf: Any = None
        #: when the request was sent upstream (0.0: it did not go there);
        #: the upstream's time runs from then to the response's end
        self.upstream_sent = 0.0

    # the stages, in order

    def start(self, now: float = 0.0) -> None:
        """
        Begin with the policy stage (C{now}: the clock's time when the
        caller has just read it).
        """
        self.front.set_timer(BODY, self.ctx.settings.idle_timeout, now)
        self.ctx.policy.admit(self)

    def progress(self) -> None:
        """
        The exchange moves again after a wait that had a timer of its own.
        """
        self.front.set_timer(BODY, self.ctx.settings.idle_timeout)

    def admitted(self, chain: Any = None) -> None:
        """
        The policy stage let the request through (with C{chain}, its filter
        chain, when it has filters): on to the origin (after the request
        body transform, if one applies).
        """
        target = self.target
        head = self.head
        sink: Any = self
        if not target.connect:
            if head.expect_continue and not self.request_done and head.version == b"1.1":
                self.front.transport.write(CONTINUE)
            if chain is not None:
                sink = response_stage(self, chain)
                transform = request_stage(self, chain, sink)
                if transform is not None:
                    self.body = transform
                    transform.start()
                    return
            if head.framing and not self.request_done and self.ctx.spool is not None:
                limit = request_limit(self)
                if request_buffer_applies(self, limit):
                    # received whole first: slow uploads never hold a backend
                    RequestBuffer(self, sink, self.ctx.spool, limit).start()
                    return
        self.ctx.origin.fetch(self, sink)

    def forward(self, sink: Any) -> None:
        """
        Ask the listener's origin for the response, to be delivered to
        C{sink}.
        """
        self.ctx.origin.fetch(self, sink)

    # the request body, as it arrives

    def request_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.discard:
            return
        body = self.body
        if body is not None:
            body.request_body(data)
        else:
            # filters are still deciding: hold it (and stop reading)
            if self.pending is None:
                self.pending = [data]
            else:
                self.pending.append(data)
            self.front.gate.pause(CONNECTING)
        self.front.touch()

    def take_pending(self) -> Optional[list]:
        """
        The body bytes held so far, for the stage that takes the body now.
        """
        pending = self.pending
        self.pending = None
        return pending

    def request_end(self) -> None:
        self.request_done = True
        if self.discard:
            if self.response_done:
                self.finish()
            return
        body = self.body
        if body is not None:
            body.request_end()
        if self.response_done:
            self.finish()

    # the response, for the client (the last sink of the response path)

    def emit(self, data: bytes) -> None:
        """
        Send C{data} to the client: collected while an upstream read is
        being parsed (one send for head and body), else written now.
        """
        out = self.out
        if out is not None:
            out.append(data)
        elif self.rbuf is not None:
            self.rbuf.write(data)
        else:
            self.front.transport.write(data)

    def flush(self) -> None:
        """
        Send what the last upstream read produced for the client.
        """
        out = self.out
        self.out = None
        if out:
            if self.rbuf is not None:
                self.rbuf.write_sequence(out)
            elif len(out) == 1:
                write_soon(self.front.transport, out[0])
            else:
                write_soon_sequence(self.front.transport, out)

    def response_head(self, response: ResponseHead) -> None:
        status = response.status
        self.status = status
        head = self.head
        front = self.front
        upgrade = None
        if status == 101:
            if head.upgrade is None:
                raise BadResponseForRequest("101 without an upgrade request")
            upgrade = policy.header_value(response.headers, b"upgrade") or head.upgrade
            framing = policy.NO_BODY
        else:
            framing = response.framing
            if framing >= policy.CHUNKED:
                if head.version == b"1.1":
                    framing = policy.CHUNKED
                else:
                    framing = policy.CLOSE_DELIMITED
                    self.close_after = True
        self.out_framing = framing
        close = self.close_after or front.read_closed
        ctx = self.ctx
        keep_alive_header = head.version == b"1.0" and not close
        served = response.served
        if served is not None and upgrade is None:
            # a head replayed from the parser's memo: serialised once per
            # variant, while nothing (a filter, the cache) has changed it
            pristine, tokens, heads = served
            if response.tokens is tokens and tuple(response.headers) == pristine:
                # (the listener context fixes Via and the hidden headers)
                key = (ctx, status, response.reason, framing, close, keep_alive_header)
                data = heads.get(key)
                if data is None:
                    data = policy.response_head(
                        status, response.reason, pristine, framing, ctx.add_via, close,
                        keep_alive_header, None, ctx.hide, response.lnames, tokens, ctx.skip,
                    )
                    keep_served(heads, key, data)
                self.response_started = True
                self.bytes_out += len(data)
                self.emit(data)
                return
        data = policy.response_head(
            status,
            response.reason,
            response.headers,
            framing,
            ctx.add_via,
            close,
            keep_alive_header,
            upgrade,
            ctx.hide,
            response.lnames,
            response.tokens,
            ctx.skip,
        )
        self.response_started = True
        self.bytes_out += len(data)
        self.emit(data)

    def head_variant(self) -> Tuple[bool, bool]:
        """
        C{(close, keep_alive_header)} of the response head this exchange
        would send now (L{response_head}'s choice), for a stage that keeps
        heads it has serialised before (a cache hit).
        """
        close = self.close_after or self.front.read_closed
        return close, self.head.version == b"1.0" and not close

    def whole_response(self, status: int, head: bytes, body: bytes) -> None:
        """
        A whole response with a C{Content-Length} body at once, its head
        serialised by the stage for the variant L{head_variant} gave (what
        L{response_head}, L{response_body}, L{response_end} and
        L{origin_done} do, in one step: a cache hit).
        """
        self.status = status
        self.out_framing = policy.CONTENT_LENGTH
        self.response_started = True
        self.response_done = True
        self.bytes_out += len(head) + len(body)
        out = self.out
        if out is not None:
            out.append(head)
            if body:
                out.append(body)
        elif self.rbuf is not None:
            self.rbuf.write_sequence([head, body] if body else [head])
        elif body:
            write_soon_sequence(self.front.transport, [head, body])
        else:
            write_soon(self.front.transport, head)
        self.origin_done()

    def response_body(self, data: bytes) -> None:
        front = self.front
        if front.timer_kind == BODY:
            front.deadline = front.clock.seconds() + self.ctx.settings.idle_timeout
        self.bytes_out += len(data)
        if self.out_framing == policy.CHUNKED:
            self.emit(b"%x\r\n" % len(data))
            self.emit(data)
            self.emit(b"\r\n")
        else:
            self.emit(data)

    def response_end(self) -> None:
        if self.out_framing == policy.CHUNKED:
            self.emit(LAST_CHUNK)
            self.bytes_out += 5
        self.response_done = True

    # what the origin says besides the response

    def origin_done(self) -> None:
        """
        The origin has delivered the whole response.
        """
        if self.finished:
            return
        rbuf = self.rbuf
        if rbuf is not None and rbuf.pending():
            # the client has yet to take what the buffer holds
            rbuf.done_waiting = True
            return
        if self.request_done:
            self.finish()
        else:
            # an early answer: the rest of the request body is dropped
            self.discard = True
            self.front.gate.resume(CONNECTING)
            if self.close_after:
                self.finish()

    def upstream_failed(
        self, status: int, message: str, headers: Sequence[Tuple[bytes, bytes]] = ()
    ) -> None:
        """
        The origin could not deliver the response (or the rest of it).
        """
        if self.finished:
            return
        if self.response_started:
            self.abort_client(message)
        else:
            self.respond(status, message, "error", "", headers)

    def internal_error(self, failure: Failure) -> None:
        """
        A bug of ours on the response path: logged with its traceback; the
        client gets a 500, or a response cut short.
        """
        log.failure(
            "internal error answering {url} on listener {listener}",
            failure,
            url=self.url(),
            listener=self.ctx.name,
        )
        if self.finished:
            return
        self.close_after = True
        self.upstream_failed(500, "internal error")

    def request_failed(self, status_error: Any) -> None:
        """
        The client's request body turned out malformed (or handling it
        failed): answer with the error (or cut the response short) and
        close both connections.
        """
        if self.finished:
            return
        if self.leg is not None:
            self.leg.close()
        self.close_after = True
        self.respond(status_error.status, status_error.message, "error")

    def timed_out(self, status: int, message: str) -> None:
        """
        The front's timer expired while this exchange was in progress.
        """
        if self.finished:
            return
        log.info("{url}: {why}", url=self.url(), why=message)
        leg = self.leg
        if leg is not None:
            if status == 504 and leg.first_byte_timeout(message):
                return  # retried on another server
            leg.close()
            if status == 504 and leg.owner is not self and not self.response_started:
                # a stage between (a cache) may answer otherwise (stale)
                leg.owner.upstream_failed(504, message)
                return
        rule = (getattr(self, "waiting_on", None) or "") if status == 503 else ""
        self.close_after = True
        if self.response_started:
            self.abort_client(message, stalled=True)
        else:
            self.respond(status, message, "error", rule)

    # tunnels

    def start_tunnel(self, conn: Any, answer: bytes, to_front: bytes) -> None:
        """
        CONNECT established or a protocol switched: splice the client's
        connection and C{conn}.
        """
        front = self.front
        front.cancel_timer()
        if answer:
            write_soon(front.transport, answer)
            self.bytes_out += len(answer)
            self.status = 200
        self.response_started = True
        self.response_done = True
        to_back = front.take_held()
        front.gate.resume(0xFF)
        splice = Splice(front.clock, self.ctx.settings.tunnel_idle_timeout, self._tunnel_closed)
        front.splice = splice
        conn.splice = splice
        front.transport.unregisterProducer()
        conn.transport.unregisterProducer()
        splice.start(front.transport, conn.transport, to_back, to_front)

    def _tunnel_closed(self, splice: Splice, why: str) -> None:
        self.bytes_in += splice.bytes_in
        self.bytes_out += splice.bytes_out
        self.close_after = True
        self.finish()

    # local answers and endings

    def respond(
        self,
        status: int,
        message: str,
        decision: str,
        rule: str = "",
        headers: Sequence[Tuple[bytes, bytes]] = (),
    ) -> None:
        """
        Answer the client with the proxy's own response.

        A failure of the proxy's side (C{decision} C{"error"}, status 500
        and up) is told to the log in full (C{message}: which server, which
        address, why); the client's body says only what kind of failure it
        was, never naming a backend, an address or a TLS failure.
        """
        self.status = status
        self.decision = decision
        self.rule = rule
        if status >= 500 and decision == "error":
            log.info(
                "{listener}: {method} {url} from {client}: {status} {why}",
                listener=self.ctx.name,
                method=self.head.method.decode("latin-1"),
                url=self.url(),
                client=self.front.client_ip,
                status=status,
                why=message,
                upstream=self.upstream,
            )
            message = PUBLIC_MESSAGES.get(status, "")
        if self.response_started:
            self.abort_client(message)
            return
        front = self.front
        head = self.head
        self.pending = None
        front.gate.resume(CONNECTING | FILTERING)
        body_pending = not self.request_done and head.framing != policy.NO_BODY
        close = (
            self.close_after
            or body_pending
            or front.read_closed
            or (self.target is not None and self.target.connect)
            or head.method == b"CONNECT"
            or head.upgrade is not None
        )
        if close:
            self.close_after = True
        data = error_response(status, message, close, headers, head.method == b"HEAD")
        self.response_started = True
        self.response_done = True
        self.bytes_out += len(data)
        front.transport.write(data)
        if self.request_done or close:
            self.finish()
        else:
            self.discard = True

    def abort_client(self, why: str, stalled: bool = False) -> None:
        """
        The response cannot be completed: the client sees the connection
        end early (no last chunk, a short body), never a silent truncation.

        @param stalled: the client stopped reading: what is queued for it
            will never drain, so the connection is aborted, not closed
            after a flush that would wait forever.
        """
        self.decision = "error"
        self.close_after = True
        self.response_done = True
        if self.out:
            self.flush()
        if stalled:
            self.front.transport.abortConnection()
        else:
            self.front.transport.loseConnection()
        self.finish()

    def client_lost(self) -> None:
        """
        The client went away.
        """
        if self.finished:
            return
        if not self.response_done:
            if not self.status or self.response_started:
                self.status = self.status or 499
            self.decision = "error"
        self.finish()

    def idempotent(self) -> bool:
        """
        Whether the request may be sent again after it reached a server.
        """
        return self.head.method in IDEMPOTENT and self.head.upgrade is None

    def url(self) -> str:
        target = self.target
        if target is not None:
            return target.url
        return self.head.target.decode("latin-1")

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        leg = self.leg
        if leg is not None:
            # the leg points back here: break the cycle, so that reference
            # counting frees both at once (no work for the cyclic GC)
            self.leg = self.body = None
            if leg.conn is not None or leg.server is not None or leg.waiter is not None:
                leg.close()
            else:
                leg.closed = True
        elif self.body is not None and isinstance(self.body, RequestBuffer):
            self.body.close()
        if self.rbuf is not None:
            self.rbuf.close()
        cleanup = self.cleanup
        if cleanup is not None:
            self.cleanup = None
            cleanup()
        ctx = self.ctx
        status = self.status
        decision = self.decision
        front = self.front
        now = front.clock.seconds()
        target = self.target
        sent = self.upstream_sent
        ctx.stats.done(
            status,
            self.bytes_in,
            self.bytes_out,
            decision,
            now - self.start_time,
            now - sent if sent else 0.0,
            target.route if target is not None else None,
        )
        if decision != "allow" or status >= 500:
            note_refusal(
                now, ctx.name, front.client_ip, self.head.method.decode("latin-1"), self.url(), status, decision, self.rule
            )
        access_log = ctx.access_log
        if access_log.enabled:
            access_log.log(
                ctx.name,
                front.client_ip,
                self.head.method.decode("latin-1"),
                self.url(),
                self.status,
                self.bytes_in,
                self.bytes_out,
                (now - self.start_time) * 1000.0,
                self.upstream,
                self.decision,
                self.rule,
                self.cache,
            )
        self.front.exchange_done(self, now)
