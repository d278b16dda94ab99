"""Training: the loop (:mod:`.loop`) and the optional dialogue-context stage (:mod:`.context`).

The entry point is :func:`deepmsi.train`; epochs are chosen by :class:`deepmsi.selection.BestOnDev`.
"""
