"""Identity for the mesh: keys, tokens, the verified principal, and the per-method gate."""

from agentmesh.kit.auth.gate import PUBLIC, Authenticator, MeshAuth, MethodRule, mesh_auth, require_scopes
from agentmesh.kit.auth.keys import IssuerKey, generate_issuer_key, jwks_document, load_issuer_keys
from agentmesh.kit.auth.principal import Approval, Principal, arguments_digest, current_principal
from agentmesh.kit.auth.reuse import ReusedToolTokens
from agentmesh.kit.auth.tokens import MESH_AUDIENCE, MESH_ISSUER, TokenIssuer, TokenVerifier, bearer_token
from agentmesh.kit.auth.trust import TrustedKeys

__all__ = [
    "MESH_AUDIENCE",
    "MESH_ISSUER",
    "PUBLIC",
    "Approval",
    "Authenticator",
    "IssuerKey",
    "MeshAuth",
    "MethodRule",
    "Principal",
    "ReusedToolTokens",
    "TokenIssuer",
    "TokenVerifier",
    "TrustedKeys",
    "arguments_digest",
    "bearer_token",
    "current_principal",
    "generate_issuer_key",
    "jwks_document",
    "load_issuer_keys",
    "mesh_auth",
    "require_scopes",
]
