"""Wire formats shared by every transport (a v2 request reads the same over REST and gRPC)."""
