"""Attribution methods behind one interface (:class:`genprint.methods.base.Attributor`).

Methods register themselves in :data:`genprint.methods.base.METHODS`; ``genprint.load(path)``
picks the right one from the saved card.
"""
