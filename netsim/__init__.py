"""netsim: multi-hop semantic image transmission simulator."""
__version__ = "0.1.0"
