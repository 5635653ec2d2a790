"""Python SDK for consumers, operators and nodes talking to the hub."""

from healthspace.client.sdk import HubClient

__all__ = ["HubClient"]
