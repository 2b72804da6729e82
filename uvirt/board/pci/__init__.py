"""Conventional PCI: configuration space, BARs, capabilities, MSI and MSI-X."""
