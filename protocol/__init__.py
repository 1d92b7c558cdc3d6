"""The MuMu signaling protocol shared by the cloud and the device agent."""

from protocol.codec import ProtocolError, decode, encode

__all__ = ["ProtocolError", "decode", "encode"]
