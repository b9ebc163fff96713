"""The project's own exception types.

Every failure a user can cause with bad input (a truncated file, a lying header, an unknown
type, a bad flag) ends in one of these, with a message naming the problem and the numbers.
They subclass ``ValueError`` so generic callers that already catch it keep working.
"""

from __future__ import annotations


class BitnetLabError(ValueError):
    """Base class of every error bitnet_lab raises on purpose."""


class FormatError(BitnetLabError):
    """A model file (any container) cannot be read as what it claims to be."""


class GGUFError(FormatError):
    """A GGUF file is malformed, truncated, inconsistent or uses something we cannot read."""


class UnsupportedTypeError(GGUFError):
    """A tensor uses a ggml type id that bitnet_lab does not decode (named in the message)."""


class SafetensorsError(FormatError):
    """A safetensors checkpoint (or its index / config.json) is malformed or inconsistent."""


class ConfigError(BitnetLabError):
    """Hyper-parameters are missing or contradict each other or the tensors."""


class HubError(BitnetLabError):
    """A Hugging Face Hub repo id could not be resolved (offline, missing, no usable file)."""


class CodecError(BitnetLabError):
    """Packing or unpacking was asked for an impossible shape, code or tiling."""


class KernelError(BitnetLabError):
    """A kernel was asked for an ISA level this build/CPU cannot run, or an impossible thread
    count."""
