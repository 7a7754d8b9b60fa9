"""A local, protocol-faithful Bitrix24 portal for development, the demo and tests."""
