"""Training: the loop (:mod:`.loop`), best-on-dev selection (:mod:`.selection`) and the optional
dialogue-context stage (:mod:`.context`). The entry point is :func:`deepmsi.train`."""
