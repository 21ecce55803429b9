"""Cocoon for Kubernetes: attested confidential GPU nodes as an inference pool paid in TON."""

__version__ = "0.1.0"
GROUP = "cocoon.dev"
VERSION = "v1alpha1"
