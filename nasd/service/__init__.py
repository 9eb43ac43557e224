"""The daemon process: the composition root (:mod:`nasd.service.daemon`) and systemd integration.

It wires the engine to its adapters (:mod:`nasd.store`, :mod:`nasd.mqtt`) in one TaskGroup.
"""
