"""dcorch's RPC front door and status channel: oslo.messaging's rabbit wire format, spoken on Trio.

dcmanager drives the subcloud lifecycle by RPC to dcorch's worker topic and receives sync status
as casts on its dcmanager-state topic (docs/rpc.md).
"""
