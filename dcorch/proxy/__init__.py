"""The API proxies: identity (keystone), platform (sysinv) and usm, in front of the master.

Each proxy forwards every request to its master service and, for the few write routes that must
reach the subclouds, submits work orders before answering (spec section 2).
"""

from __future__ import annotations

from dcorch.proxy.app import ProxyApp as ProxyApp
from dcorch.proxy.app import create_proxy_app as create_proxy_app
from dcorch.proxy.auth import KeystoneTokenValidator as KeystoneTokenValidator
from dcorch.proxy.auth import TokenCache as TokenCache
from dcorch.proxy.auth import TokenInfo as TokenInfo
from dcorch.proxy.auth import TokenValidator as TokenValidator
from dcorch.proxy.errors import Overloaded as Overloaded
from dcorch.proxy.fernet_audit import FernetKeySource as FernetKeySource
from dcorch.proxy.fernet_audit import SysinvFernetKeys as SysinvFernetKeys
from dcorch.proxy.serve import serve_proxy as serve_proxy
from dcorch.proxy.sink import WorkSink as WorkSink

__all__ = (
    "FernetKeySource",
    "KeystoneTokenValidator",
    "Overloaded",
    "ProxyApp",
    "SysinvFernetKeys",
    "TokenCache",
    "TokenInfo",
    "TokenValidator",
    "WorkSink",
    "create_proxy_app",
    "serve_proxy",
)
