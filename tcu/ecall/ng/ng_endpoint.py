"""The NG eCall's sockets: SIP and RTP on UDP, opened when first wanted, reopened after a failure.

    endpoint = NgEndpoint(config.ng, on_request=..., on_stray_2xx=..., on_closed=...)
    tasks.create_task(endpoint.run(), name="ecall-ng")   # waits until wanted, then keeps them open
    endpoint.prepare()                                   # the network offers IMS emergency calls: open now
    sip, rtp = await endpoint.ready()                    # DeviceGoneError if they cannot be opened in time

A vehicle that never makes an NG eCall never opens them (a fleet of simulated agents in one process
would otherwise hold two sockets each). A port already in use or no route to the proxy is logged and
tried again: it fails the dial in hand (which the state machine redials, or the CS fall-back takes), and
never ends the eCall service. Both sockets bind to the address the kernel would use towards the proxy;
that address is what Via, Contact and SDP advertise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NoReturn

from tcu.ecall.config import NgConfig
from tcu.ecall.ng.rtp import RtpStream
from tcu.ecall.ng.sip_transactions import SipTimers
from tcu.ecall.ng.sip_transport import RequestHandler, SipTransport
from tcu.errors import DeviceGoneError
from tcu.virtual_time import io_timeout
from telematics_wire.sip.message import SipResponse

_LOGGER = logging.getLogger(__name__)
REOPEN_S = 5.0  # sockets that could not be opened are tried again after this long
OPEN_WAIT_S = 2.0  # how long a dial waits for the sockets to open before it fails (and is redialled)


class NgEndpoint:
    def __init__(
        self,
        config: NgConfig,
        *,
        on_request: RequestHandler,
        on_stray_2xx: Callable[[SipResponse], None],
        on_closed: Callable[[str], None],
        timers: SipTimers | None = None,
    ) -> None:
        self._config = config
        self._on_request = on_request
        self._on_stray_2xx = on_stray_2xx
        self._on_closed = on_closed
        self._timers = timers
        self._wanted = asyncio.Event()
        self._open = asyncio.Event()
        self._failure = "not opened yet"
        self.sip: SipTransport | None = None
        self.rtp: RtpStream | None = None

    def prepare(self) -> None:
        self._wanted.set()

    async def ready(self) -> tuple[SipTransport, RtpStream]:
        self._wanted.set()
        try:
            async with asyncio.timeout(io_timeout(OPEN_WAIT_S)):  # binding is real I/O: a real floor
                await self._open.wait()
        except TimeoutError:
            raise DeviceGoneError(f"NG eCall SIP endpoint not open ({self._failure})") from None
        sip, rtp = self.sip, self.rtp
        if sip is None or rtp is None:  # closed again between the wake-up and now
            raise DeviceGoneError(f"NG eCall SIP endpoint closed ({self._failure})")
        return sip, rtp

    async def run(self) -> NoReturn:
        await self._wanted.wait()
        config = self._config
        proxy = (config.proxy_host, config.proxy_port)
        while True:
            sip = SipTransport(
                host="",  # the address towards the proxy (see SipTransport)
                port=config.local_port,
                proxy=proxy,
                on_request=self._on_request,
                on_stray_2xx=self._on_stray_2xx,
                timers=self._timers,
            )
            try:
                async with sip, RtpStream(host=sip.advertised[0], port=config.rtp_port) as rtp:
                    self.sip, self.rtp = sip, rtp
                    self._open.set()
                    _LOGGER.info("NG eCall: SIP %s:%d, RTP port %d, proxy %s:%d", *sip.advertised, rtp.port, *proxy)
                    await rtp.run()
            except OSError as exc:
                self._failure = f"{type(exc).__name__}: {exc}"
                _LOGGER.error("NG eCall: cannot open the SIP/RTP sockets (%s); again in %g s", exc, REOPEN_S)
            finally:
                self._open.clear()
                self.sip = self.rtp = None
                self._on_closed("the NG eCall sockets closed")
            await asyncio.sleep(REOPEN_S)
