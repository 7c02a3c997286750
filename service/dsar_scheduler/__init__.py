"""dsar-scheduler: unattended fulfilment of Amplitude DSAR (access) requests."""

__version__ = "0.1.0"
