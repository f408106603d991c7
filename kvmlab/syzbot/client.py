"""HTTP to the syzbot dashboard: GET one page, with a timeout, through the
configured proxy (else the standard ``http_proxy``/``https_proxy``/``no_proxy``
environment variables). Every failure is one line naming what could not be
reached; what the answer means is :mod:`kvmlab.syzbot.model`'s."""

from __future__ import annotations

import html
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from kvmlab import __version__
from kvmlab.errors import InfraError
from kvmlab.syzbot.model import SyzbotError

log = logging.getLogger(__name__)

#: Seconds one request may take (connect and read).
REQUEST_TIMEOUT = 30.0
#: Bytes of one answer kvmlab reads at most (a console log is a few MB).
MAX_ANSWER = 64 * 1024 * 1024

OFFLINE_HINT = "a bug directory (--bug DIR) works offline"


class SyzbotUnreachable(InfraError):
    """The dashboard could not be reached, or failed to answer."""


@dataclass(frozen=True)
class Dashboard:
    """One syzbot dashboard at ``base`` (``https://syzkaller.appspot.com``)."""

    base: str
    proxy: str = ""
    """``http://HOST:PORT`` for every request; '' = the environment's."""
    timeout: float = REQUEST_TIMEOUT

    def url(self, link: str) -> str:
        """The address of a link of the dashboard's JSON (relative, HTML escaped) or a full URL."""
        link = html.unescape(link)
        return link if "://" in link else urllib.parse.urljoin(self.base + "/", link.lstrip("/"))

    def get(self, link: str) -> str:
        """The text at ``link``; :class:`SyzbotError` for a page the dashboard
        does not have (404), :class:`SyzbotUnreachable` for the network and
        the dashboard's own failures."""
        url = self.url(link)
        proxies = {"http": self.proxy, "https": self.proxy} if self.proxy else None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
        req = urllib.request.Request(url, headers={"User-Agent": f"kvmlab/{__version__}"})
        via = f" through proxy {self.proxy}" if self.proxy else ""
        log.debug("GET %s%s", url, via)
        try:
            with opener.open(req, timeout=self.timeout) as answer:
                data: bytes = answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise SyzbotError(f"the syzbot dashboard has no {url} (HTTP 404)") from None
            raise SyzbotUnreachable(f"the syzbot dashboard failed to answer {url}: HTTP {e.code} {e.reason}"
                                    f"; {OFFLINE_HINT}") from None
        except urllib.error.URLError as e:
            raise SyzbotUnreachable(f"cannot reach the syzbot dashboard at {self.base}{via} ({e.reason}); "
                                    f"{OFFLINE_HINT}") from None
        except TimeoutError:
            raise SyzbotUnreachable(f"the syzbot dashboard at {self.base}{via} did not answer within "
                                    f"{self.timeout:g} s; {OFFLINE_HINT}") from None
        except OSError as e:
            raise SyzbotUnreachable(f"cannot reach the syzbot dashboard at {self.base}{via} "
                                    f"({e.strerror or e}); {OFFLINE_HINT}") from None
        if len(data) > MAX_ANSWER:
            raise SyzbotUnreachable(f"the syzbot dashboard's answer to {url} is over "
                                    f"{MAX_ANSWER // 2**20} MiB")
        return data.decode("utf-8", errors="replace")
