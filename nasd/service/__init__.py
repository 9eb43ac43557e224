"""The daemon process: the composition root (:mod:`nasd.service.daemon`) and systemd integration.

It wires the engine to its adapters (:mod:`nasd.store`, :mod:`nasd.mqtt`) in one TaskGroup.
:mod:`~nasd.service.intake` decides what is let in (size and rate limits, decoding in time
slices), :mod:`~nasd.service.outgoing` encodes what goes out (a failure is never fatal), and
:mod:`~nasd.service.presence` keeps one daemon per broker.
"""
