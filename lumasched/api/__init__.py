"""The wire layer: typed models of the Dream Machine API, the request taxonomy
(``Family``, ``family_of``), the one converter, the client.

Knows nothing of jobs, limits or files. Everything public is re-exported here.
"""

from lumasched.api._assets import AssetStream
from lumasched.api._client import ClientStats, LumaClient, Timeout
from lumasched.api._converter import dumps_body, request_from_dict, request_to_dict
from lumasched.api._models import (
    Assets,
    AudioRequest,
    CharacterIdentity,
    CharacterRef,
    Concept,
    CreateRequest,
    Credits,
    Generation,
    GenerationKeyframe,
    GenerationPage,
    GenerationState,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframe,
    Keyframes,
    Media,
    ModifyVideoRequest,
    Ping,
    ReframeImageRequest,
    ReframeVideoRequest,
    UpscaleRequest,
    VideoRequest,
    generation_refs,
    quote_id,
    replace_generation_refs,
)
from lumasched.api._retry import RetryPolicy
from lumasched.api._taxonomy import Family, family_of

__all__ = [
    "AssetStream",
    "Assets",
    "AudioRequest",
    "CharacterIdentity",
    "CharacterRef",
    "ClientStats",
    "Concept",
    "CreateRequest",
    "Credits",
    "Family",
    "Generation",
    "GenerationKeyframe",
    "GenerationPage",
    "GenerationState",
    "ImageKeyframe",
    "ImageRef",
    "ImageRequest",
    "Keyframe",
    "Keyframes",
    "LumaClient",
    "Media",
    "ModifyVideoRequest",
    "Ping",
    "ReframeImageRequest",
    "ReframeVideoRequest",
    "RetryPolicy",
    "Timeout",
    "UpscaleRequest",
    "VideoRequest",
    "dumps_body",
    "family_of",
    "generation_refs",
    "quote_id",
    "replace_generation_refs",
    "request_from_dict",
    "request_to_dict",
]
